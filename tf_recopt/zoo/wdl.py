"""Wide&Deep: 26 hashed string features + 13 dense. Wide part: a 1-d
embedding per hashed feature, summed; deep part: embeddings + dense -> MLP."""
import keras

from tf_recopt.zoo.layers import mlp

CONFIG = {
    "full": dict(features=26, buckets=100_000, dim=32, deep=(1024, 512, 256)),
    "medium": dict(features=26, buckets=10_000, dim=32, deep=(1024, 512, 256)),
    "small": dict(features=4, buckets=1000, dim=8, deep=(32, 16)),
}


def build(size="full"):
    c = CONFIG[size]
    dense = keras.Input((13,), name="dense_features")
    cats = [keras.Input((), dtype="string", name=f"c{i}") for i in range(c["features"])]
    hashed = [keras.layers.Hashing(c["buckets"], name=f"hash_{i}")(s) for i, s in enumerate(cats)]
    wide = [keras.layers.Embedding(c["buckets"], 1, name=f"wide_{i}")(h) for i, h in enumerate(hashed)]
    deep = [keras.layers.Embedding(c["buckets"], c["dim"], name=f"deep_{i}")(h) for i, h in enumerate(hashed)]
    wide_logit = keras.ops.sum(keras.ops.concatenate(wide, axis=1), axis=1, keepdims=True)
    h = mlp(keras.ops.concatenate(deep + [dense], axis=1), c["deep"], name="deep_mlp")
    deep_logit = keras.layers.Dense(1, name="deep_logit")(h)
    prob = keras.ops.sigmoid(wide_logit + deep_logit)
    return keras.Model({"dense_features": dense, **{f"c{i}": s for i, s in enumerate(cats)}},
                       {"ctr": prob}, name="wdl")
