"""DLRM built from tensorflow-recommenders' DotInteraction (Keras 2 / tf_keras),
laid out like the TF Model Garden's DLRM (tfrs.experimental.models.Ranking):
bottom MLP over the dense features, one embedding per categorical feature,
DotInteraction over [bottom] + embeddings, the bottom output concatenated in
front of the interactions, top MLP.

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.tfrs_dlrm PATH SIZE SEED`
(registry.py does this in a subprocess).
"""
from tf_recopt.zoo import legacy_keras

CONFIG = {
    "full": dict(tables=26, vocab=100_000, dim=64, bottom=(512, 256, 64), top=(1024, 1024, 512, 256)),
    "medium": dict(tables=26, vocab=10_000, dim=64, bottom=(512, 256, 64), top=(1024, 1024, 512, 256)),
    "small": dict(tables=5, vocab=1000, dim=8, bottom=(32, 8), top=(32, 16)),
}


def build(size="full", skip_gather=False):
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    c = CONFIG[size]
    dense = tf.keras.Input((13,), name="dense_features")
    cats = [tf.keras.Input((), dtype=tf.int64, name=f"cat_{i}") for i in range(c["tables"])]
    embs = [tf.keras.layers.Embedding(c["vocab"], c["dim"], name=f"emb_{i}")(x) for i, x in enumerate(cats)]
    bottom = dense
    for i, n in enumerate(c["bottom"]):
        bottom = tf.keras.layers.Dense(n, activation="relu", name=f"bottom_{i}")(bottom)
    interaction = tfrs.layers.feature_interaction.DotInteraction(skip_gather=skip_gather, name="interaction")
    interactions = interaction([bottom] + embs)
    x = tf.keras.layers.Concatenate()([bottom, interactions])
    for i, n in enumerate(c["top"]):
        x = tf.keras.layers.Dense(n, activation="relu", name=f"top_{i}")(x)
    return legacy_keras.ctr_model(dense, cats, x)


if __name__ == "__main__":
    legacy_keras.main(build)
