"""Two-tower retrieval: a user tower scores every candidate of a
[n, 64] matrix (1,000,000 by default) and returns the top 500 ids."""
import keras
import numpy as np

CONFIG = {
    "full": dict(users=100_000, candidates=1_000_000, dim=64, k=500, tower=(256, 64)),
    "medium": dict(users=10_000, candidates=100_000, dim=64, k=100, tower=(256, 64)),
    "small": dict(users=1000, candidates=5000, dim=16, k=50, tower=(32, 16)),
}


class TopKCandidates(keras.layers.Layer):
    def __init__(self, candidates, k, **kwargs):
        super().__init__(**kwargs)
        self.k = k
        rng = np.random.default_rng(0)
        self.matrix = self.add_weight(shape=candidates.shape, initializer="zeros", trainable=False,
                                      name="candidates")
        self.matrix.assign(candidates)
        self.ids = self.add_weight(shape=(candidates.shape[0],), dtype="int64", initializer="zeros",
                                   trainable=False, name="candidate_ids")
        self.ids.assign(rng.permutation(candidates.shape[0]).astype(np.int64) + 10_000_000)

    def call(self, user):
        scores = keras.ops.matmul(user, keras.ops.transpose(self.matrix))
        values, idx = keras.ops.top_k(scores, self.k)
        return values, keras.ops.take(self.ids, idx)


def build(size="full"):
    c = CONFIG[size]
    user = keras.Input((), dtype="int64", name="user_id")
    x = keras.layers.Embedding(c["users"], c["dim"], name="user_emb")(user)
    for i, n in enumerate(c["tower"]):
        x = keras.layers.Dense(n, activation="relu" if i < len(c["tower"]) - 1 else None, name=f"tower_{i}")(x)
    cands = np.random.default_rng(1).standard_normal((c["candidates"], c["dim"])).astype("float32")
    scores, ids = TopKCandidates(cands, c["k"], name="topk")(x)
    return keras.Model({"user_id": user}, {"scores": scores, "candidate_ids": ids}, name="two_tower")
