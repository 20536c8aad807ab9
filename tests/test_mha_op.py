"""Recopt>MultiHeadAttention against keras.layers.MultiHeadAttention and
its pure-TF reference: every input sharing (self, key = value, separate),
masks ([B, T, S], [B, 1, S], fully masked rows, select and add forms), odd
widths, empty batches and sequences, NaN, bf16 weights and bad shapes."""
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(21)


def _weights(heads, key_dim, value_dim, dq, dk, dv, out):
    def w(*shape):
        return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    def b(n):
        return (RNG.standard_normal(n) * 0.1).astype(np.float32)
    nh, nhv = heads * key_dim, heads * value_dim
    return [w(dq, nh), b(nh), w(dk, nh), b(nh), w(dv, nhv), b(nhv), w(nhv, out), b(out)]


def _run(ops, q, k, v, weights, heads, key_dim, value_dim, mask=None, **attrs):
    masks = [] if mask is None else [mask]
    return ops.recopt_multi_head_attention(q, k, v, *weights, masks, num_heads=heads, key_dim=key_dim,
                                           value_dim=value_dim, **attrs).numpy()


def _check(ops, q, k, v, weights, heads, key_dim, value_dim, mask=None, scale=None, rtol=2e-5, **attrs):
    scale = 1.0 / np.sqrt(key_dim) if scale is None else scale
    got = _run(ops, q, k, v, weights, heads, key_dim, value_dim, mask, scale=scale, **attrs)
    want = reference.multi_head_attention(q, k, v, *weights, heads, key_dim, value_dim, scale, mask=mask,
                                          **attrs).numpy()
    assert got.shape == want.shape == (q.shape[0], q.shape[1], weights[6].shape[1])
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 10)
    return got


def _x(batch, steps, width):
    return RNG.standard_normal((batch, steps, width)).astype(np.float32)


def _keras_layer(heads, key_dim, value_dim, dq, dkv, out=None):
    layer = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim, value_dim=value_dim,
                                            output_shape=out)
    layer(np.zeros((1, 2, dq), np.float32), np.zeros((1, 3, dkv), np.float32))
    for var in layer.weights:   # non-zero biases, so a dropped bias fails the test
        var.assign(RNG.standard_normal(var.shape).astype(np.float32) * 0.3)
    return layer


def _flat(layer):
    """The layer's [d, N, H] / [N, H] / [N, Hv, E] weights as the op's 2-D kernels."""
    qk, qb, kk, kb, vk, vb, ok, ob = [w.numpy() for w in layer.weights]
    return [qk.reshape(qk.shape[0], -1), qb.ravel(), kk.reshape(kk.shape[0], -1), kb.ravel(),
            vk.reshape(vk.shape[0], -1), vb.ravel(), ok.reshape(-1, ok.shape[-1]), ob]


def _lengths_mask(batch, t, s, lengths=None):
    lengths = RNG.integers(0, s + 1, batch) if lengths is None else np.asarray(lengths)
    return np.broadcast_to((np.arange(s)[None, :] < lengths[:, None])[:, None, :], (batch, t, s)).copy()


@pytest.mark.parametrize("batch", [0, 1, 7, 512])
def test_matches_keras_self_attention(ops, batch):
    layer = _keras_layer(2, 16, 16, 32, 32)
    x = _x(batch, 50, 32)
    mask = _lengths_mask(batch, 50, 50)
    want = layer(x, x, attention_mask=mask).numpy()
    got = _run(ops, x, x, x, _flat(layer), 2, 16, 16, mask, scale=1 / 4.0, mask_value=-2.3726709583555947e+38)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("t, s", [(1, 50), (5, 7), (50, 1)])
def test_matches_keras_cross_attention(ops, t, s):
    layer = _keras_layer(4, 8, 12, 24, 40, out=20)
    q, kv = _x(9, t, 24), _x(9, s, 40)
    want = layer(q, kv).numpy()
    got = _run(ops, q, kv, kv, _flat(layer), 4, 8, 12, scale=1 / np.sqrt(8.0))
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("sharing", ["self", "key_is_value", "separate", "query_is_key"])
def test_every_input_sharing(ops, sharing):
    w = _weights(3, 5, 7, 13, 13, 13, 11)
    a, b, c = _x(6, 9, 13), _x(6, 9, 13), _x(6, 9, 13)
    q, k, v = {"self": (a, a, a), "key_is_value": (a, b, b), "separate": (a, b, c), "query_is_key": (a, a, c)}[sharing]
    q, k, v = (tf.constant(x) for x in (q, k, v)) if sharing != "self" else (tf.constant(a),) * 3
    _check(ops, q, k, v, w, 3, 5, 7)


@pytest.mark.parametrize("heads, key_dim, value_dim", [(1, 1, 1), (1, 64, 64), (8, 4, 4), (2, 33, 17), (5, 3, 9)])
def test_head_shapes(ops, heads, key_dim, value_dim):
    w = _weights(heads, key_dim, value_dim, 10, 21, 6, 3)
    mask = _lengths_mask(4, 11, 19)
    _check(ops, _x(4, 11, 10), _x(4, 19, 21), _x(4, 19, 6), w, heads, key_dim, value_dim, mask)


@pytest.mark.parametrize("mode, value", [("select", -1e9), ("select", 0.0), ("add", -1e9), ("add", -3.0)])
def test_mask_forms(ops, mode, value):
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    x = _x(8, 12, 16)
    mask = _lengths_mask(8, 12, 12, lengths=[0, 1, 5, 12, 3, 0, 7, 12])   # rows 0 and 5 fully masked
    _check(ops, x, x, x, w, 2, 8, 8, mask, mask_mode=mode, mask_value=value)


def test_zero_masked_weights(ops):
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    x = _x(8, 12, 16)
    mask = _lengths_mask(8, 12, 12, lengths=[0, 1, 5, 12, 3, 0, 7, 12])
    got = _check(ops, x, x, x, w, 2, 8, 8, mask, mask_value=-1e9, zero_masked=True)
    np.testing.assert_allclose(got[0], np.broadcast_to(w[7], got[0].shape), rtol=1e-6)   # attends to nothing


def test_one_mask_row_per_example(ops):
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    q, kv = _x(5, 4, 16), _x(5, 30, 16)
    row = _lengths_mask(5, 1, 30)
    full = _run(ops, q, kv, kv, w, 2, 8, 8, np.repeat(row, 4, axis=1), scale=0.3, mask_value=-1e9)
    got = _check(ops, q, kv, kv, w, 2, 8, 8, row, scale=0.3, mask_value=-1e9)
    np.testing.assert_array_equal(got, full)


@pytest.mark.parametrize("rows", ["causal", "one_row"])
def test_mask_shared_by_the_batch(ops, rows):
    """A [1, T or 1, S] mask (Keras' causal mask) applies to every example,
    as its broadcast to [B, ...] would."""
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    x = _x(6, 12, 16)
    shared = np.tril(np.ones((1, 12, 12), bool)) if rows == "causal" else _lengths_mask(1, 1, 12, lengths=[7])
    got = _check(ops, x, x, x, w, 2, 8, 8, shared, mask_value=-1e9)
    full = _run(ops, x, x, x, w, 2, 8, 8, np.repeat(shared, 6, axis=0), scale=1 / np.sqrt(8), mask_value=-1e9)
    np.testing.assert_array_equal(got, full)
    assert _run(ops, x[:0], x[:0], x[:0], w, 2, 8, 8, shared, scale=0.5).shape == (0, 12, 16)


@pytest.mark.parametrize("t, s", [(12, 12), (5, 9), (9, 5), (1, 7), (0, 4)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_causal_attr(ops, t, s, with_mask):
    """causal masks key step j > query step i (band_part(ones, -1, 0), as
    Keras builds it for any T and S), on its own or with a mask."""
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    q, kv = _x(4, t, 16), _x(4, s, 16)
    mask = _lengths_mask(4, t, s, lengths=[s, 1, 3, 0]) if with_mask else None
    _check(ops, q, kv, kv, w, 2, 8, 8, mask, mask_value=-1e9, causal=True)
    _check(ops, q, kv, kv, w, 2, 8, 8, mask, mask_value=-1e9, causal=True, zero_masked=True)


@pytest.mark.parametrize("shape", [(4, 3, 9, 13), (1, 3, 9, 13), (4, 3, 1, 13)],
                         ids=["per_example", "shared", "one_row"])
def test_mask_per_head(ops, shape):
    """[B or 1, N, T or 1, S]: each head its own mask (the reference applies
    it unbroadcast over heads, so a head reading another's rows fails)."""
    w = _weights(3, 4, 4, 8, 8, 8, 8)
    q, kv = _x(4, 9, 8), _x(4, 13, 8)
    mask = RNG.random(shape) < 0.5
    mask[..., 0] = True
    _check(ops, q, kv, kv, w, 3, 4, 4, mask, mask_value=-1e9)
    _check(ops, q, kv, kv, w, 3, 4, 4, mask, mask_mode="add", mask_value=-1e4, zero_masked=True)


def test_arbitrary_random_mask(ops):
    w = _weights(4, 6, 6, 12, 12, 12, 12)
    x = _x(3, 17, 12)
    _check(ops, x, x, x, w, 4, 6, 6, RNG.random((3, 17, 17)) < 0.5, mask_value=-1e4)


def test_masked_keys_do_not_leak(ops):
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    q, kv = _x(2, 3, 8), _x(2, 6, 8)
    mask = _lengths_mask(2, 3, 6, lengths=[4, 4])
    base = _run(ops, q, kv, kv, w, 2, 4, 4, mask, scale=0.5, mask_value=-1e30)
    kv[:, 4:] = 1e6   # only masked positions change
    np.testing.assert_allclose(_run(ops, q, kv, kv, w, 2, 4, 4, mask, scale=0.5, mask_value=-1e30), base, rtol=1e-6)


@pytest.mark.parametrize("t, s", [(0, 5), (4, 0), (0, 0)])
def test_empty_sequences(ops, t, s):
    w = _weights(2, 4, 4, 8, 8, 8, 6)
    got = _run(ops, _x(3, t, 8), _x(3, s, 8), _x(3, s, 8), w, 2, 4, 4, scale=0.5)
    assert got.shape == (3, t, 6)
    if t and not s:   # attention over nothing: the output bias alone, as TensorFlow's empty sum gives
        np.testing.assert_array_equal(got, np.broadcast_to(w[7], got.shape))


def test_nan_stays_in_its_example(ops):
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    x = _x(4, 6, 8)
    x[2, 3, 1] = np.nan
    got = _run(ops, x, x, x, w, 2, 4, 4, scale=0.5)
    want = reference.multi_head_attention(x, x, x, *w, 2, 4, 4, 0.5).numpy()
    assert np.isnan(got[2]).all() and np.isnan(want[2]).all()
    np.testing.assert_allclose(np.delete(got, 2, 0), np.delete(want, 2, 0), rtol=2e-5, atol=2e-5)


def test_bf16_weights(ops):
    w = _weights(2, 8, 8, 16, 16, 16, 16)
    x = _x(5, 10, 16)
    got = _check(ops, x, x, x, w, 2, 8, 8, weights_bf16=True)
    fp32 = _run(ops, x, x, x, w, 2, 8, 8, scale=1 / np.sqrt(8.0))
    assert not np.allclose(got, fp32, rtol=1e-6, atol=1e-6)   # the rounding really happened


def test_new_weights_are_repacked(ops):
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    x = tf.constant(_x(2, 5, 8))
    fn = tf.function(lambda *ws: ops.recopt_multi_head_attention(x, x, x, *ws, [], num_heads=2, key_dim=4,
                                                                 value_dim=4, scale=0.5))
    fn(*w)
    w2 = [a * 1.5 for a in w]
    np.testing.assert_allclose(fn(*w2).numpy(), reference.multi_head_attention(x, x, x, *w2, 2, 4, 4, 0.5).numpy(),
                               rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("bad", ["batch", "kv_steps", "width", "mask", "mask_batch", "mask_heads", "kernel",
                                 "heads"])
def test_bad_shapes_name_the_input(ops, bad):
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    q, k, v, mask = _x(2, 3, 8), _x(2, 5, 8), _x(2, 5, 8), np.ones((2, 3, 5), bool)
    heads, match = 2, None
    if bad == "batch":
        k, v, match = _x(3, 5, 8), _x(3, 5, 8), "disagree on B or S"
    elif bad == "kv_steps":
        v, match = _x(2, 4, 8), "disagree on B or S"
    elif bad == "width":
        q, match = _x(2, 3, 9), "widths"
    elif bad == "mask":
        mask, match = np.ones((2, 2, 5), bool), "mask must be"
    elif bad == "mask_batch":
        mask, match = np.ones((3, 3, 5), bool), "mask must be"
    elif bad == "mask_heads":
        mask, match = np.ones((2, 3, 3, 5), bool), "with N = 2"
    elif bad == "kernel":
        w[6], match = w[6][:7], "output: weight is"
    else:
        heads, match = 3, "query: weight is"
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        _run(ops, q, k, v, w, heads, 4, 4, mask, scale=0.5)


def test_nan_key_makes_its_rows_nan(ops):
    """A NaN score makes its softmax row NaN in TensorFlow, wherever it sits
    in the row; with separate key and value inputs only the attention
    carries it to the output."""
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    q, k, v = _x(3, 5, 8), _x(3, 40, 8), _x(3, 40, 8)
    k[1, 21, 0] = np.nan   # not lane 0 of any vector width
    got = _run(ops, q, k, v, w, 2, 4, 4, scale=0.5)
    want = reference.multi_head_attention(q, k, v, *w, 2, 4, 4, 0.5).numpy()
    assert np.isnan(want[1]).all() and np.isnan(got[1]).all()
    np.testing.assert_allclose(np.delete(got, 1, 0), np.delete(want, 1, 0), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("mode", ["select", "add"])
def test_padding_keys_change_nothing(ops, mode):
    """Keys every query row has masked are left out of the fused head when
    their weights are provably 0: padding the sequence from 17 to 50 masked
    keys must give what the 17 give, and the reference. (Example 2 masks
    everything, so it weighs all keys alike and depends on their number.)"""
    w = _weights(2, 16, 16, 12, 12, 12, 12)
    q, kv = _x(4, 9, 12), _x(4, 50, 12)
    mask = _lengths_mask(4, 9, 50, lengths=[17, 3, 0, 9])
    padded = _check(ops, q, kv, kv, w, 2, 16, 16, mask, mask_mode=mode, mask_value=-1e9)
    short = _run(ops, q, kv[:, :17], kv[:, :17], w, 2, 16, 16, mask[:, :, :17], scale=0.25, mask_mode=mode,
                 mask_value=-1e9)
    np.testing.assert_allclose(np.delete(padded, 2, 0), np.delete(short, 2, 0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_value_under_the_mask(ops, bad):
    """A masked key's weight is 0, and TensorFlow's 0 * NaN (or Inf) is
    NaN: leaving that key out would hide it."""
    w = _weights(2, 4, 4, 8, 8, 8, 8)
    q, k, v = _x(3, 5, 8), _x(3, 40, 8), _x(3, 40, 8)
    v[1, 30, 2] = bad
    mask = _lengths_mask(3, 5, 40, lengths=[40, 20, 20])
    got = _run(ops, q, k, v, w, 2, 4, 4, mask, scale=0.5, mask_value=-1e9)
    want = reference.multi_head_attention(q, k, v, *w, 2, 4, 4, 0.5, mask=mask, mask_value=-1e9).numpy()
    assert np.isnan(want[1]).all() and np.isnan(got[1]).all()
    np.testing.assert_allclose(np.delete(got, 1, 0), np.delete(want, 1, 0), rtol=2e-5, atol=2e-5)


# Every kernel path's attention: key lengths either side of where each ISA's
# fused head (scores held in registers: 8 vectors of keys) hands over to the
# unfused GEMM + softmax + GEMM path (32 keys generic, 64 AVX2, 128 AVX-512),
# query lengths that leave every tile-row remainder, odd head widths, and
# every mask form.
_ISA_SCRIPT = r"""
import numpy as np
import tensorflow as tf
import tf_recopt
from tf_recopt.ops import reference

ops = tf_recopt.load_ops()
rng = np.random.default_rng(3)


def x(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def check(t, s, heads, key_dim, value_dim, mask=None, w=None, **attrs):
    d = 12
    w = w or [x(d, heads * key_dim) / 3, x(heads * key_dim) / 10, x(d, heads * key_dim) / 3, x(heads * key_dim) / 10,
              x(d, heads * value_dim) / 3, x(heads * value_dim) / 10, x(heads * value_dim, 8) / 3, x(8) / 10]
    q, k, v = x(3, t, d), x(3, s, d), x(3, s, d)
    masks = [] if mask is None else [mask]
    got = ops.recopt_multi_head_attention(q, k, v, *w, masks, num_heads=heads, key_dim=key_dim, value_dim=value_dim,
                                          scale=0.4, **attrs).numpy()
    want = reference.multi_head_attention(q, k, v, *w, heads, key_dim, value_dim, 0.4, mask=mask, **attrs).numpy()
    np.testing.assert_allclose(got, want, rtol=3e-5, atol=3e-5, err_msg=f"t={t} s={s} {attrs} mask={mask is not None}")


def lengths(t, s):
    return np.broadcast_to((np.arange(s)[None, :] < np.array([s, 1, s // 2])[:, None])[:, None, :], (3, t, s)).copy()


for s in (1, 7, 16, 17, 32, 33, 50, 64, 65, 128, 129, 150):
    for t in (1, 3, 5, 9):
        check(t, s, 2, 16, 16)
    check(6, s, 3, 5, 17, lengths(6, s), mask_value=-1e9)
    check(6, s, 2, 16, 16, lengths(6, s), mask_mode="add", mask_value=-3.0)
    check(6, s, 2, 16, 16, lengths(6, s), mask_mode="add", mask_value=-1e9)
    check(7, s, 2, 16, 16, lengths(7, s), mask_value=-1e9, zero_masked=True)
    check(7, s, 2, 8, 33, rng.random((3, 7, s)) < 0.6, mask_value=-1e4)
    check(5, s, 2, 16, 16, lengths(1, s), mask_value=-1e9)
    check(9, s, 2, 16, 16, np.tril(np.ones((1, 9, s), bool)), mask_value=-1e9)
    check(9, s, 2, 16, 16, None, mask_value=-1e9, causal=True, zero_masked=True)
    # Every score -102.4: exp(score - 0) underflows, so a row max that let
    # in the padding past s (0) would give 0 / 0 instead of uniform weights.
    zero, one = np.zeros((12, 32), np.float32), np.ones(32, np.float32)
    check(5, s, 2, 16, 16, w=[zero, one, zero, -16 * one, x(12, 32), x(32), x(32, 8), x(8)])
print("ok")
"""


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_isa_attends_alike(isa):
    """RECOPT_ISA forces a kernel path (one the CPU lacks falls back to the
    best one it has)."""
    result = subprocess.run([sys.executable, "-c", _ISA_SCRIPT], capture_output=True, text=True,
                            env={**os.environ, "RECOPT_ISA": isa})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
