"""DCN-v2 with tensorflow-recommenders Cross layers (Keras 2 / tf_keras).

Run as `TF_USE_LEGACY_KERAS=1 python -m tf_recopt.zoo.dcn PATH SIZE SEED`
(registry.py does this in a subprocess).
"""
import sys

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
    out = tf.keras.layers.Dense(1, activation="sigmoid", name="ctr")(x)
    return tf.keras.Model({"dense_features": dense, **{f"cat_{i}": t for i, t in enumerate(cats)}}, {"ctr": out})


def export(path, size, seed):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    model = build(size)
    specs = {k: tf.TensorSpec(t.shape, t.dtype, name=k) for k, t in model.input.items()}
    serve = tf.function(lambda features: model(features), input_signature=[specs])
    tf.saved_model.save(model, path, signatures={"serving_default": serve.get_concrete_function()})


if __name__ == "__main__":
    export(sys.argv[1], sys.argv[2], int(sys.argv[3]))
