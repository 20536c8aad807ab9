"""DCN-v2 with tensorflow-recommenders Cross layers (Keras 2 / tf_keras).

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.dcn PATH SIZE SEED`
(registry.py does this in a subprocess).
"""
from tf_recopt.zoo import legacy_keras

CONFIG = {
    "full": dict(tables=26, vocab=100_000, dim=16, cross=3, deep=(512, 256)),
    "medium": dict(tables=26, vocab=10_000, dim=16, cross=3, deep=(512, 256)),
    "small": dict(tables=4, vocab=1000, dim=8, cross=2, deep=(32, 16)),
}


def build(size="full"):
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    c = CONFIG[size]
    dense = tf.keras.Input((13,), name="dense_features")
    cats = [tf.keras.Input((), dtype=tf.int64, name=f"cat_{i}") for i in range(c["tables"])]
    embs = [tf.keras.layers.Embedding(c["vocab"], c["dim"], name=f"emb_{i}")(x) for i, x in enumerate(cats)]
    x0 = tf.keras.layers.Concatenate()(embs + [dense])
    x = x0
    for i in range(c["cross"]):
        x = tfrs.layers.dcn.Cross(name=f"cross_{i}")(x0, x)
    for i, n in enumerate(c["deep"]):
        x = tf.keras.layers.Dense(n, activation="relu", name=f"deep_{i}")(x)
    return legacy_keras.ctr_model(dense, cats, x)


if __name__ == "__main__":
    legacy_keras.main(build)
