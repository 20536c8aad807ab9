"""DIN: target item attends over a behaviour sequence of 50 item ids (0 = padding)."""
import keras

from tf_recopt.zoo.layers import attention_pool, mlp

CONFIG = {
    "full": dict(items=1_000_000, dim=32, seq=50, att=(80, 40), top=(200, 80, 1)),
    "small": dict(items=1000, dim=8, seq=10, att=(16, 8), top=(16, 1)),
}


def build(size="full"):
    c = CONFIG[size]
    target = keras.Input((), dtype="int64", name="target_item")
    history = keras.Input((c["seq"],), dtype="int64", name="history")
    emb = keras.layers.Embedding(c["items"], c["dim"], name="item_emb")
    q, keys = emb(target), emb(history)
    pooled = attention_pool(q, keys, keras.ops.not_equal(history, 0), c["att"], "din")
    x = keras.ops.concatenate([q, pooled, q * pooled], axis=1)
    prob = mlp(x, c["top"], last_activation="sigmoid", name="top")
    return keras.Model({"target_item": target, "history": history}, {"ctr": prob}, name="din")
