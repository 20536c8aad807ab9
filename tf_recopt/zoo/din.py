"""DIN: target item attends over a behaviour sequence of 50 item ids (0 = padding)."""
import keras

from tf_recopt.zoo.layers import SEQUENCE_CONFIG as CONFIG
from tf_recopt.zoo.layers import attention_pool, mlp, sequence_inputs


def build(size="full"):
    c = CONFIG[size]
    target, history, q, keys, mask = sequence_inputs(c)
    pooled = attention_pool(q, keys, mask, c["att"], "din")
    x = keras.ops.concatenate([q, pooled, q * pooled], axis=1)
    prob = mlp(x, c["top"], last_activation="sigmoid", name="top")
    return keras.Model({"target_item": target, "history": history}, {"ctr": prob}, name="din")
