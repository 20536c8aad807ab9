"""Exports tf_keras (Keras 2) models for the pass tests. Run as
`python -m tests.legacy_keras_export gru|masked_gru|augru|mha|lookup|ragged|nested_ragged OUT_DIR` with
TF_USE_LEGACY_KERAS=1: tf_keras and Keras 3 cannot share a process."""
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

T, D, UNITS = 10, 8, 6          # GRU models (tests/test_fuse_gru.py)
GRU_VARIANTS = {
    "standard": dict(return_sequences=True),                   # tf_keras' standard_gru function
    "reset_before": dict(return_sequences=True, reset_after=False),   # the generic RNN loop
    "backwards": dict(return_sequences=True, go_backwards=True),
    "last": dict(),
}
MASKED_GRU_VARIANTS = {           # fed x and a [B, T] bool mask m
    "bidirectional": lambda k: k.layers.Bidirectional(k.layers.GRU(UNITS, return_sequences=True)),
    "bidirectional_last": lambda k: k.layers.Bidirectional(k.layers.GRU(UNITS)),
    "zero_output_last": lambda k: k.layers.GRU(UNITS, zero_output_for_mask=True),
    "zero_output_last_backwards": lambda k: k.layers.GRU(UNITS, zero_output_for_mask=True, go_backwards=True),
}
MHA_T, MHA_S, MHA_D = 6, 9, 16   # MultiHeadAttention models (tests/test_fuse_mha.py)
MHA_VARIANTS = ("self_masked", "cross", "self_causal")
RAGGED_ROWS = 70                 # ragged Embedding (tests/test_fuse_embedding_ragged.py)
LOOKUP_USERS = 300               # StringLookup towers (tests/test_fuse_embedding_lookup_layers.py)


def _keras():
    keras = tf.keras
    assert "tf_keras" in keras.__name__ or os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    return keras


def export_gru(out_dir):
    keras = _keras()
    for name, kwargs in GRU_VARIANTS.items():
        x = keras.Input((T, D), name="x")
        y = keras.layers.GRU(UNITS, name="gru", bias_initializer="random_normal", **kwargs)(x)
        tf.saved_model.save(keras.Model(x, y), os.path.join(out_dir, name))


def export_masked_gru(out_dir):
    keras = _keras()
    for name, layer in MASKED_GRU_VARIANTS.items():
        x = keras.Input((T, D), name="x")
        m = keras.Input((T,), dtype=tf.bool, name="m")
        tf.saved_model.save(keras.Model([x, m], layer(keras)(x, mask=m)), os.path.join(out_dir, name))


def export_augru(out_dir):
    """DeepCTR's AUGRU (DIEN's VecAttGRUCell) as a tf_keras RNN cell fed a
    nested (x, score) sequence, masked; only the final state is kept."""
    keras = _keras()

    class VecAttGRUCell(keras.layers.Layer):
        state_size = output_size = UNITS

        def build(self, shapes):
            d = shapes[0][-1]
            self.gates = self.add_weight("gates", (d + UNITS, 2 * UNITS), initializer="glorot_uniform")
            self.gate_bias = self.add_weight("gate_bias", (2 * UNITS,), initializer="random_normal")
            self.candidate = self.add_weight("candidate", (d + UNITS, UNITS), initializer="glorot_uniform")
            self.candidate_bias = self.add_weight("candidate_bias", (UNITS,), initializer="random_normal")

        def call(self, inputs, states):
            (x, a), h = inputs, states[0]
            value = tf.sigmoid(tf.matmul(tf.concat([x, h], 1), self.gates) + self.gate_bias)
            r, u = tf.split(value, 2, axis=1)
            c = tf.tanh(tf.matmul(tf.concat([x, r * h], 1), self.candidate) + self.candidate_bias)
            u = (1.0 - a) * u
            new_h = u * h + (1 - u) * c
            return new_h, [new_h]

    x = keras.Input((T, D), name="x")
    a = keras.Input((T, 1), name="a")
    m = keras.Input((T,), dtype=tf.bool, name="m")
    y = keras.layers.RNN(VecAttGRUCell(), name="augru")((x, a), mask=m)
    tf.saved_model.save(keras.Model([x, a, m], y), out_dir)


def export_mha(out_dir):
    keras = _keras()
    for name in MHA_VARIANTS:
        layer = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8, value_dim=6, name="mha",
                                                bias_initializer="random_normal")
        q = keras.Input((MHA_T, MHA_D), name="q")
        if name == "self_masked":
            m = keras.Input((MHA_T, MHA_T), dtype=tf.bool, name="m")
            model = keras.Model([q, m], layer(q, q, attention_mask=m))
        elif name == "self_causal":   # tf_keras builds a [1, T, S] mask from the query's shape
            model = keras.Model([q], layer(q, q, use_causal_mask=True))
        else:
            kv = keras.Input((MHA_S, MHA_D), name="kv")
            model = keras.Model([q, kv], layer(q, kv))
        tf.saved_model.save(model, os.path.join(out_dir, name))


def export_lookup(out_dir):
    """A TFRS-tutorial-style query tower: StringLookup + Embedding, and an
    IntegerLookup'd age bucketised the same way, concatenated."""
    keras = _keras()
    users = [f"user_{i}" for i in range(LOOKUP_USERS)]
    user = keras.Input((), dtype=tf.string, name="user")
    age = keras.Input((), dtype=tf.int64, name="age")
    user_tower = keras.Sequential([keras.layers.StringLookup(vocabulary=users, mask_token=None),
                                   keras.layers.Embedding(LOOKUP_USERS + 1, 16)])
    age_tower = keras.Sequential([keras.layers.IntegerLookup(vocabulary=np.arange(0, 100, dtype=np.int64)),
                                  keras.layers.Embedding(102, 4)])
    x = keras.layers.Concatenate()([user_tower(user), age_tower(age)])
    model = keras.Model([user, age], keras.layers.Dense(8)(x))
    tf.saved_model.save(model, out_dir)


def export_ragged(out_dir):
    """tf_keras Embedding on a ragged Input (its signature takes the values
    and row_splits as two tensors), pooled by sum and by mean."""
    keras = _keras()
    hist = keras.Input((None,), ragged=True, dtype=tf.int64, name="hist")
    e = keras.layers.Embedding(RAGGED_ROWS, 8, embeddings_initializer="random_normal")(hist)
    pooled = keras.layers.Lambda(lambda t: tf.concat([tf.reduce_sum(t, 1), tf.reduce_mean(t, 1)], 1))(e)
    tf.saved_model.save(keras.Model(hist, keras.layers.Dense(3)(pooled)), out_dir)


def export_nested_ragged(out_dir):
    """tf_keras Embedding on a ragged_rank-2 Input (sessions of item ids;
    its signature takes values and both row_splits): each session summed,
    then the sessions averaged, and every id of an example summed."""
    keras = _keras()
    hist = keras.Input((None, None), ragged=True, dtype=tf.int64, name="sessions")
    e = keras.layers.Embedding(RAGGED_ROWS, 8, embeddings_initializer="random_normal")(hist)
    pooled = keras.layers.Lambda(lambda t: tf.concat([tf.reduce_mean(tf.reduce_sum(t, 2), 1),
                                                      tf.reduce_sum(t, [1, 2])], 1))(e)
    tf.saved_model.save(keras.Model(hist, keras.layers.Dense(3)(pooled)), out_dir)


def export_in_subprocess(kind, out_dir):
    """Runs this module for `kind` in a TF_USE_LEGACY_KERAS=1 subprocess;
    returns its stderr tail on failure, else None."""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run([sys.executable, "-m", "tests.legacy_keras_export", kind, str(out_dir)], env=env,
                            cwd=root, capture_output=True, text=True)
    return None if result.returncode == 0 else result.stderr[-3000:]


def export_or_fail(kind, out_dir):
    """export_in_subprocess for a test: a failed export fails it with the
    subprocess's stderr. Returns out_dir."""
    failure = export_in_subprocess(kind, out_dir)
    assert failure is None, failure
    return out_dir


if __name__ == "__main__":
    np.random.seed(0)
    tf.random.set_seed(0)
    {"gru": export_gru, "masked_gru": export_masked_gru, "augru": export_augru, "mha": export_mha, "lookup": export_lookup,
     "ragged": export_ragged, "nested_ragged": export_nested_ragged}[sys.argv[1]](sys.argv[2])
