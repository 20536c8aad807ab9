"""DLRM: 13 dense features through a bottom MLP, 26 embedding tables, dot
interaction (strict lower triangle of A*A^T gathered with constant indices,
as the reference implementation does), top MLP."""
import keras
import numpy as np

from tf_recopt.zoo.layers import mlp

CONFIG = {
    "full": dict(tables=26, vocab=100_000, dim=64, bottom=(512, 256, 64), top=(512, 256, 1)),
    "medium": dict(tables=26, vocab=10_000, dim=64, bottom=(512, 256, 64), top=(512, 256, 1)),
    "small": dict(tables=4, vocab=1000, dim=8, bottom=(32, 8), top=(32, 16, 1)),
}


def build(size="full"):
    c = CONFIG[size]
    dense = keras.Input((13,), name="dense_features")
    cats = [keras.Input((), dtype="int64", name=f"cat_{i}") for i in range(c["tables"])]
    x = mlp(dense, c["bottom"], name="bottom")
    embs = [keras.layers.Embedding(c["vocab"], c["dim"], name=f"emb_{i}")(cat) for i, cat in enumerate(cats)]
    stacked = keras.ops.stack([x] + embs, axis=1)                                # [B, F, d]
    inter = keras.ops.matmul(stacked, keras.ops.transpose(stacked, (0, 2, 1)))   # [B, F, F]
    f = c["tables"] + 1
    rows, cols = np.tril_indices(f, -1)
    flat = keras.ops.reshape(inter, (-1, f * f))
    tri = keras.ops.take(flat, (rows * f + cols).astype("int32"), axis=1)
    top = mlp(keras.ops.concatenate([x, tri], axis=1), c["top"], last_activation="sigmoid", name="top")
    return keras.Model({"dense_features": dense, **{f"cat_{i}": t for i, t in enumerate(cats)}},
                       {"ctr": top}, name="dlrm")
