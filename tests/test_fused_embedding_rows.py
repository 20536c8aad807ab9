"""The fused lookup's row loop on every kernel path (RECOPT_ISA), bit for
bit against a sequential float32 loop: row widths that are whole vectors,
several register passes and ragged tails, fp32 and bf16 tables, every
combiner with and without weights, empty bags, and NaN/Inf in rows and
weights. Comparisons with TensorFlow's own lookups are in
test_fused_embedding_op.py; this pins the arithmetic each ISA does."""
import pytest

from tests.isa_util import ISAS, assert_script_passes

_SCRIPT = r"""
import numpy as np, tensorflow as tf
import tf_recopt
from tf_recopt.ops.embedding import EmbeddingFeature as F, fused_embedding_lookup
ops = tf_recopt.load_ops()
rng = np.random.default_rng(5)


def sequential(table, ids, splits, weights, combiner):
    # The order the op promises: one id after another, products rounded
    # before the add, the divisor accumulated in double.
    out = np.zeros((len(splits) - 1, table.shape[1]), np.float32)
    for r in range(len(splits) - 1):
        b, e = splits[r], splits[r + 1]
        acc = np.zeros(table.shape[1], np.float32)
        for i in range(b, e):
            row = table[ids[i]]
            acc = acc + (np.float32(weights[i]) * row if weights is not None else row)
        if combiner != "sum" and e > b:
            w = np.ones(e - b) if weights is None else weights[b:e].astype(np.float64)
            norm = np.sqrt((w * w).sum()) if combiner == "sqrtn" else w.sum()
            div = np.float32(norm)
            acc = np.zeros_like(acc) if div == 0 else acc / div
        out[r] = acc
    return out


for dim in (1, 7, 16, 33, 64, 100, 128, 200):
    values = rng.standard_normal((40, dim)).astype(np.float32)
    values[3, dim // 2] = np.nan
    values[5, 0] = np.inf
    for storage in (tf.float32, tf.bfloat16):
        table = tf.constant(values, storage)
        wide = tf.cast(table, tf.float32).numpy()
        ids = rng.integers(0, 40, (9, 6))
        got = fused_embedding_lookup(ops, [table], [F(0)], [ids])[0].numpy()
        np.testing.assert_array_equal(got, wide[ids], err_msg=f"none dim={dim} {storage.name}")
        lengths = np.array([6, 0, 1, 17, 0, 3, 2])
        splits = np.concatenate([[0], np.cumsum(lengths)])
        flat = rng.integers(0, 40, splits[-1])
        weights = rng.standard_normal(splits[-1]).astype(np.float32)
        weights[4] = np.nan
        weights[[20, 21]] = [2.0, -2.0]
        for combiner in ("sum", "mean", "sqrtn"):
            for w in (None, weights):
                feature = F(0, layout="ragged", combiner=combiner, weighted=w is not None)
                got = fused_embedding_lookup(ops, [table], [feature], [flat], [[splits]],
                                             None if w is None else [w])[0].numpy()
                want = sequential(wide, flat, splits, w, combiner)
                if combiner == "mean" and w is None:
                    want[lengths == 0] = np.nan  # tf.reduce_mean over an empty ragged row
                np.testing.assert_array_equal(got, want, err_msg=f"{combiner} w={w is not None} dim={dim} "
                                                                 f"{storage.name}")
print("ok")
"""


@pytest.mark.parametrize("isa", ISAS)
def test_every_isa_pools_rows_in_order_bit_for_bit(isa):
    """A path the CPU lacks falls back to the best one it has."""
    assert_script_passes(_SCRIPT, isa)
