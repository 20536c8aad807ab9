"""Exports tf_keras (Keras 2) GRU models for tests/test_fuse_gru.py. Run as
`python -m tests.legacy_gru_export OUT_DIR` with TF_USE_LEGACY_KERAS=1:
tf_keras and Keras 3 cannot share a process."""
import os
import sys

import numpy as np
import tensorflow as tf

T, D, UNITS = 10, 8, 6
VARIANTS = {
    "standard": dict(return_sequences=True),                   # tf_keras' standard_gru function
    "reset_before": dict(return_sequences=True, reset_after=False),   # the generic RNN loop
    "backwards": dict(return_sequences=True, go_backwards=True),
    "last": dict(),
}


def export(out_dir):
    keras = tf.keras
    assert "tf_keras" in keras.__name__ or os.environ.get("TF_USE_LEGACY_KERAS") == "1"
    tf.random.set_seed(0)
    for name, kwargs in VARIANTS.items():
        x = keras.Input((T, D), name="x")
        y = keras.layers.GRU(UNITS, name="gru", bias_initializer="random_normal", **kwargs)(x)
        tf.saved_model.save(keras.Model(x, y), os.path.join(out_dir, name))


if __name__ == "__main__":
    np.random.seed(0)
    export(sys.argv[1])
