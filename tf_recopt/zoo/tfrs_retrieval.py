"""A tensorflow-recommenders retrieval index: a query tower in front of
`tfrs.layers.factorized_top_k.BruteForce` over string-identified candidates
(Keras 2 / tf_keras), the way the TFRS retrieval tutorial exports it.

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.tfrs_retrieval PATH SIZE SEED`
(registry.py does this in a subprocess).
"""
import sys

CONFIG = {
    "full": dict(features=32, candidates=1_000_000, dim=64, k=500),
    "medium": dict(features=32, candidates=100_000, dim=64, k=100),
    "small": dict(features=8, candidates=20_000, dim=16, k=50),
}


def build(size="full", seed=0):
    import numpy as np
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    c = CONFIG[size]
    query_model = tf.keras.Sequential([tf.keras.layers.Dense(c["dim"], activation="relu"),
                                       tf.keras.layers.Dense(c["dim"])], name="query_tower")
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=c["k"])
    rng = np.random.default_rng(seed)
    candidates = rng.standard_normal((c["candidates"], c["dim"])).astype(np.float32)
    identifiers = np.array([f"item_{i}".encode() for i in range(c["candidates"])], dtype=object)
    index.index(tf.constant(candidates), tf.constant(identifiers))
    index(tf.zeros([1, c["features"]]))
    return index


def export(path, size, seed):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    index = build(size, seed)
    features = CONFIG[size]["features"]

    @tf.function(input_signature=[tf.TensorSpec([None, features], tf.float32, name="query_features")])
    def serve(query_features):
        scores, ids = index(query_features)
        return {"scores": scores, "item_ids": ids}

    tf.saved_model.save(index, path, signatures={"serving_default": serve.get_concrete_function()})


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2], int(sys.argv[3]))
