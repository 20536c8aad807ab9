"""DIEN (simplified): a GRU over the behaviour sequence, then DIN attention
of the target over the GRU states. AUGRU's attention-gated second GRU is
left out: Keras has no AUGRU layer; the interest-evolution GRU is kept."""
import keras

from tf_recopt.zoo.layers import SEQUENCE_CONFIG as CONFIG
from tf_recopt.zoo.layers import attention_pool, mlp, sequence_inputs


def build(size="full"):
    c = CONFIG[size]
    target, history, q, keys, mask = sequence_inputs(c)
    states = keras.layers.GRU(c["dim"], return_sequences=True, name="interest_gru")(keys)
    pooled = attention_pool(q, states, mask, c["att"], "dien")
    prob = mlp(keras.ops.concatenate([q, pooled], axis=1), c["top"], last_activation="sigmoid", name="top")
    return keras.Model({"target_item": target, "history": history}, {"ctr": prob}, name="dien")
