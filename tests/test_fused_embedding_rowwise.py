"""Recopt>FusedEmbeddingLookup over uint8 8-bit row-wise tables (FBGEMM's
fused format: codes, then an fp32 scale and bias per row): the encoding's
error bound, the op against the decoded-table oracle for every combiner,
width and ISA path, sharded and variable tables, and bad tables."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference
from tf_recopt.ops.embedding import EmbeddingFeature as F
from tf_recopt.ops.embedding import (ShardedTable, decode_rowwise_uint8, encode_rowwise_uint8,
                                     fused_embedding_lookup)

RNG = np.random.default_rng(17)


def _rowwise(rows, dim, spread=1.0):
    x = (RNG.standard_normal((rows, dim)) * spread).astype(np.float32)
    return x, encode_rowwise_uint8(x)


def test_encoding_is_within_half_a_step_of_every_value():
    x, packed = _rowwise(300, 37, spread=5.0)
    x[7] = 2.5                 # a constant row comes back exactly
    x[8, :] = 0.0
    x[9, 3] = 1e6              # an outlier coarsens its own row only
    packed = encode_rowwise_uint8(x)
    assert packed.dtype == np.uint8 and packed.shape == (300, 37 + 8)
    back = decode_rowwise_uint8(packed)
    scale = (x.max(1) - x.min(1)) / 255
    err = np.abs(back - x)
    assert (err <= scale[:, None] / 2 * (1 + 1e-5) + 1e-6 * np.abs(x)).all()
    np.testing.assert_array_equal(back[7], x[7])
    np.testing.assert_array_equal(back[8], x[8])
    assert err[10:].max() > 0.5 * scale[10:].max() / 2  # the rounding is real
    with pytest.raises(ValueError, match="row 2 holds a NaN or Inf"):
        x[2, 0] = np.inf
        encode_rowwise_uint8(x)


@pytest.mark.parametrize("dim", [1, 7, 16, 33, 130])
@pytest.mark.parametrize("combiner, weighted", [("none", False), ("sum", False), ("mean", True), ("sqrtn", False)])
def test_lookups_match_the_decoded_table(ops, dim, combiner, weighted):
    """Every width (vector tails, several 8-vector passes) and combiner."""
    _, packed = _rowwise(500, dim)
    decoded = decode_rowwise_uint8(packed)
    batch, hot = 65, 3
    ids = RNG.integers(0, 500, (batch, hot))
    weights = RNG.random((batch, hot)).astype(np.float32) if weighted else None
    feature = F(0, combiner=combiner, weighted=weighted)
    got = fused_embedding_lookup(ops, [tf.constant(packed)], [feature], [ids], weights=[weights])[0].numpy()
    want = reference.fused_embedding_lookup([tf.constant(decoded)], [feature], [ids], weights=[weights])[0].numpy()
    # The op dequantizes with one fma per value; the oracle rounds the same
    # value from float64: equal but for sums' order-free rounding.
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


def test_empty_batch_batch_one_and_ragged_empties(ops):
    _, packed = _rowwise(20, 12)
    decoded = decode_rowwise_uint8(packed)
    t = tf.constant(packed)
    assert fused_embedding_lookup(ops, [t], [F(0)], [np.zeros(0, np.int64)])[0].shape == (0, 12)
    np.testing.assert_allclose(fused_embedding_lookup(ops, [t], [F(0)], [np.array([4])])[0].numpy(),
                               decoded[[4]], rtol=1e-6, atol=1e-6)
    values, splits = np.array([1, 2, 3]), np.array([0, 0, 3, 3], np.int64)
    got = fused_embedding_lookup(ops, [t], [F(0, layout="ragged", combiner="sum")], [values], [[splits]])[0]
    want = np.stack([np.zeros(12, np.float32), decoded[[1, 2, 3]].sum(0), np.zeros(12, np.float32)])
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


def test_sharded_and_variable_tables(ops):
    """Shards address rows at dim + 8 bytes each; a uint8 variable is read live."""
    x, packed = _rowwise(41, 9)
    shards = [tf.Variable(packed[i::3]) for i in range(3)]  # "mod" partitioning
    ids = RNG.integers(0, 41, 50)
    got = fused_embedding_lookup(ops, [ShardedTable(tuple(shards), "mod")], [F(0)], [ids])[0].numpy()
    np.testing.assert_allclose(got, decode_rowwise_uint8(packed)[ids], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got, x[ids], atol=np.ptp(x, axis=1).max() / 510 + 1e-6)


def test_out_of_range_and_bad_tables_are_named(ops):
    _, packed = _rowwise(10, 4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature 0"):
        fused_embedding_lookup(ops, [tf.constant(packed)], [F(0)], [np.array([10])])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"table 0 must be .* uint8 8-bit row-wise"):
        fused_embedding_lookup(ops, [tf.constant(np.zeros((4, 8), np.uint8))], [F(0)], [np.array([1])])


_ISA = """
import numpy as np, tensorflow as tf, tf_recopt
from tf_recopt.ops.embedding import EmbeddingFeature as F, encode_rowwise_uint8, fused_embedding_lookup
ops = tf_recopt.load_ops()
rng = np.random.default_rng(2)
packed = encode_rowwise_uint8(rng.standard_normal((300, 45)).astype(np.float32))
ids = rng.integers(0, 300, (70, 5))
w = rng.random((70, 5)).astype(np.float32)
y = fused_embedding_lookup(ops, [tf.constant(packed)], [F(0, combiner="sum", weighted=True)], [ids], weights=[w])
np.save({out!r}, y[0].numpy())
"""


def test_every_isa_path_agrees(tmp_path):
    outs = {}
    for isa in ("generic", "avx2", "avx512"):
        out = str(tmp_path / f"{isa}.npy")
        r = subprocess.run([sys.executable, "-c", _ISA.format(out=out)], capture_output=True, text=True,
                           env={**os.environ, "RECOPT_ISA": isa})
        if r.returncode != 0 and "not supported" in r.stderr:
            continue
        assert r.returncode == 0, r.stderr[-2000:]
        outs[isa] = np.load(out)
    assert "generic" in outs and len(outs) >= 2
    for isa, y in outs.items():
        np.testing.assert_allclose(y, outs["generic"], rtol=2e-6, atol=2e-6, err_msg=isa)
