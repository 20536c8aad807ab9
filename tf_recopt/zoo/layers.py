"""Keras 3 building blocks shared by the zoo models."""
import keras


def mlp(x, units, activation="relu", last_activation=None, name="mlp"):
    for i, n in enumerate(units):
        act = last_activation if i == len(units) - 1 and last_activation is not None else activation
        x = keras.layers.Dense(n, activation=act, name=f"{name}_{i}")(x)
    return x


def attention_pool(query, keys, mask, units, name):
    """DIN activation unit: MLP over [q, k, q-k, q*k] per position, masked, summed."""
    t = keys.shape[1]
    q = keras.ops.repeat(keras.ops.expand_dims(query, 1), t, axis=1)
    feats = keras.ops.concatenate([q, keys, q - keys, q * keys], axis=-1)
    h = mlp(feats, units, activation="sigmoid", name=f"{name}_att")
    w = keras.layers.Dense(1, name=f"{name}_att_out")(h)            # [B, T, 1]
    w = keras.ops.where(keras.ops.expand_dims(mask, -1), w, keras.ops.zeros_like(w))
    return keras.ops.sum(w * keys, axis=1)                          # [B, d]


# DIN and DIEN share their sizes and inputs: a target item and a behaviour
# sequence of item ids (0 = padding) looked up in one item table.
SEQUENCE_CONFIG = {
    "full": dict(items=1_000_000, dim=32, seq=50, att=(80, 40), top=(200, 80, 1)),
    "medium": dict(items=100_000, dim=32, seq=50, att=(80, 40), top=(200, 80, 1)),
    "small": dict(items=1000, dim=8, seq=10, att=(16, 8), top=(16, 1)),
}


def sequence_inputs(c):
    """(target input, history input, target embedding, history embeddings, padding mask)."""
    target = keras.Input((), dtype="int64", name="target_item")
    history = keras.Input((c["seq"],), dtype="int64", name="history")
    emb = keras.layers.Embedding(c["items"], c["dim"], name="item_emb")
    return target, history, emb(target), emb(history), keras.ops.not_equal(history, 0)
