"""A ranking model the way the tensorflow-recommenders tutorials build one
(Keras 2 / tf_keras): each categorical feature is a StringLookup (or an
IntegerLookup) over a vocabulary file, then an Embedding; the embeddings
are concatenated into a 256-64-1 MLP. The vocabularies are SavedModel
assets, as `StringLookup(vocabulary=path)` exports them.

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.tfrs_ranking PATH SIZE SEED`
(registry.py does this in a subprocess).
"""
import os
import sys
import tempfile

# Embedding width and each string feature's vocabulary size; the age
# feature is an IntegerLookup over AGES.
CONFIG = {
    "full": dict(dim=32, user_id=1_000_000, movie_title=100_000, zip_code=40_000, occupation=21),
    "medium": dict(dim=32, user_id=100_000, movie_title=20_000, zip_code=4_000, occupation=21),
    "small": dict(dim=8, user_id=2_000, movie_title=500, zip_code=100, occupation=21),
}
STRING_FEATURES = ("user_id", "movie_title", "zip_code", "occupation")
AGES = (1, 18, 25, 35, 45, 50, 56)


def _vocabulary_file(folder, name, size):
    path = os.path.join(folder, f"{name}_vocab.txt")
    with open(path, "w") as f:
        f.write("\n".join(f"{name}_{i}" for i in range(size)))
    return path


def build(size, vocab_dir):
    import numpy as np
    import tensorflow as tf
    keras = tf.keras
    c = CONFIG[size]
    inputs, embedded = {}, []
    for name in STRING_FEATURES:
        inputs[name] = keras.Input((), dtype=tf.string, name=name)
        lookup = keras.layers.StringLookup(vocabulary=_vocabulary_file(vocab_dir, name, c[name]), mask_token=None)
        embedded.append(keras.layers.Embedding(c[name] + 1, c["dim"])(lookup(inputs[name])))
    inputs["age"] = keras.Input((), dtype=tf.int64, name="age")
    age = keras.layers.IntegerLookup(vocabulary=np.array(AGES, np.int64), mask_token=None)(inputs["age"])
    embedded.append(keras.layers.Embedding(len(AGES) + 1, c["dim"])(age))
    x = keras.layers.Concatenate()(embedded)
    x = keras.layers.Dense(256, activation="relu")(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(1, name="rating")(x))


def export(path, size, seed):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    with tempfile.TemporaryDirectory() as vocab_dir:   # saving copies the files into assets/
        tf.saved_model.save(build(size, vocab_dir), path)


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2], int(sys.argv[3]))
