"""Keras 3 building blocks shared by the zoo models."""
import keras


def mlp(x, units, activation="relu", last_activation=None, name="mlp"):
    for i, n in enumerate(units):
        act = last_activation if i == len(units) - 1 and last_activation is not None else activation
        x = keras.layers.Dense(n, activation=act, name=f"{name}_{i}")(x)
    return x


def _activation_unit(query, keys, units, name):
    """DIN's activation unit: an MLP over [q, k, q-k, q*k] per position -> [B, T, 1]."""
    t = keys.shape[1]
    q = keras.ops.repeat(keras.ops.expand_dims(query, 1), t, axis=1)
    feats = keras.ops.concatenate([q, keys, q - keys, q * keys], axis=-1)
    h = mlp(feats, units, activation="sigmoid", name=f"{name}_att")
    return keras.layers.Dense(1, name=f"{name}_att_out")(h)


def attention_pool(query, keys, mask, units, name):
    """DIN: activation-unit weights, masked to zero, weighted sum of the keys."""
    w = _activation_unit(query, keys, units, name)
    w = keras.ops.where(keras.ops.expand_dims(mask, -1), w, keras.ops.zeros_like(w))
    return keras.ops.sum(w * keys, axis=1)                          # [B, d]


def attention_scores(query, keys, mask, units, name):
    """DIEN: activation-unit scores, softmax over the unmasked positions -> [B, T]
    (padding gets -2^32 + 1 before the softmax, as DIEN's code does)."""
    s = _activation_unit(query, keys, units, name)[..., 0]
    return keras.ops.softmax(keras.ops.where(mask, s, keras.ops.full_like(s, -2.0 ** 32 + 1)), axis=-1)


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


class AUGRUCell(keras.layers.Layer):
    """DIEN's GRU with attentional update gate, as a cell for keras.layers.RNN.

    Keras' RNN takes one sequence, so each step's input is [x, a]: the
    attention score rides along as the last feature. mode "keep" is DIEN's
    released code (VecAttGRUCell, also DeepCTR's AUGRU): z = (1 - a) * z,
    h = z * h + (1 - z) * c. mode "update" is the paper's equations: the
    update gate u (the candidate's weight) becomes a * u, h = (1 - u) * h + u * c.
    """

    def __init__(self, units, mode="keep", **kwargs):
        super().__init__(**kwargs)
        if mode not in ("keep", "update"):
            raise ValueError(f"AUGRUCell mode must be 'keep' or 'update', got {mode!r}")
        self.units, self.mode = units, mode
        self.state_size = self.output_size = units

    def build(self, input_shape):
        d, u = input_shape[-1] - 1, self.units
        self.kernel = self.add_weight(shape=(d, 3 * u), name="kernel", initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight(shape=(u, 3 * u), name="recurrent_kernel", initializer="orthogonal")
        self.bias = self.add_weight(shape=(2, 3 * u), name="bias", initializer="random_normal")

    def call(self, inputs, states):
        h = states[0] if isinstance(states, (list, tuple)) else states
        x, a = inputs[:, :-1], inputs[:, -1:]
        xz, xr, xh = keras.ops.split(keras.ops.matmul(x, self.kernel) + self.bias[0], 3, axis=-1)
        hz, hr, hh = keras.ops.split(keras.ops.matmul(h, self.recurrent_kernel) + self.bias[1], 3, axis=-1)
        gate = keras.ops.sigmoid(xz + hz)
        c = keras.ops.tanh(xh + keras.ops.sigmoid(xr + hr) * hh)
        if self.mode == "keep":
            z = (1.0 - a) * gate
            new = z * h + (1.0 - z) * c
        else:
            u = a * gate
            new = (1.0 - u) * h + u * c
        return new, [new]

    def get_config(self):
        return {**super().get_config(), "units": self.units, "mode": self.mode}
