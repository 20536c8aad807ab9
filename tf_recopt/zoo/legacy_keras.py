"""What the tf_keras (Keras 2) zoo models share: the CTR head and inputs
dict, and the SavedModel export with a serving_default over the input dict.
Import only in a process started with TF_USE_LEGACY_KERAS=1 (registry.py)."""
import sys


def ctr_model(dense, cats, x):
    """sigmoid CTR head on x; inputs keyed dense_features, cat_0, cat_1, ..."""
    import tensorflow as tf
    out = tf.keras.layers.Dense(1, activation="sigmoid", name="ctr")(x)
    return tf.keras.Model({"dense_features": dense, **{f"cat_{i}": t for i, t in enumerate(cats)}}, {"ctr": out})


def export(build, path, size, seed):
    import tensorflow as tf
    tf.keras.utils.set_random_seed(seed)
    model = build(size)
    specs = {k: tf.TensorSpec(t.shape, t.dtype, name=k) for k, t in model.input.items()}
    serve = tf.function(lambda features: model(features), input_signature=[specs])
    tf.saved_model.save(model, path, signatures={"serving_default": serve.get_concrete_function()})


def main(build):
    export(build, sys.argv[1], sys.argv[2], int(sys.argv[3]))
