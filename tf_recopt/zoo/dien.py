"""DIEN (Zhou et al. 2019, as in its released code): a GRU extracts interests
from the behaviour sequence, the target attends over them (DIN's activation
unit, masked softmax), and an AUGRU (attention-gated update) evolves them
into the final interest, which joins the target and the history sum."""
import keras

from tf_recopt.zoo.layers import SEQUENCE_CONFIG as CONFIG
from tf_recopt.zoo.layers import AUGRUCell, attention_scores, mlp, sequence_inputs


def build(size="full"):
    c = CONFIG[size]
    target, history, q, keys, mask = sequence_inputs(c)
    states = keras.layers.GRU(c["dim"], return_sequences=True, name="interest_gru")(keys, mask=mask)
    scores = attention_scores(q, states, mask, c["att"], "dien")
    evolving = keras.ops.concatenate([states, keras.ops.expand_dims(scores, -1)], axis=-1)
    interest = keras.layers.RNN(AUGRUCell(c["dim"]), name="interest_augru")(evolving, mask=mask)
    history_sum = keras.ops.sum(keys * keras.ops.expand_dims(keras.ops.cast(mask, keys.dtype), -1), axis=1)
    x = keras.ops.concatenate([q, history_sum, q * history_sum, interest], axis=1)
    prob = mlp(x, c["top"], last_activation="sigmoid", name="top")
    return keras.Model({"target_item": target, "history": history}, {"ctr": prob}, name="dien")
