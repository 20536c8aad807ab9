"""Recopt>DinAttention against its pure-TF reference (the concatenated
activation-unit MLP, mask, optional softmax and weighted sum it replaces)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(9)
ZOO_PARTS = ["q", "k", "q-k", "q*k"]


def _mlp(in_dim, units, activations):
    dims = [in_dim] + list(units)
    weights = [(RNG.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32) for a, b in zip(dims, dims[1:])]
    biases = [(RNG.standard_normal(b) * 0.1).astype(np.float32) for b in dims[1:]]
    return weights, biases, list(activations), [0.2] * len(units)


def _inputs(batch, steps, d, lengths=None):
    q = RNG.standard_normal((batch, d)).astype(np.float32)
    keys = RNG.standard_normal((batch, steps, d)).astype(np.float32)
    if lengths is None:
        lengths = RNG.integers(0, steps + 1, batch)
    mask = np.arange(steps)[None, :] < np.asarray(lengths)[:, None]
    return q, keys, mask


def _check(ops, q, keys, mask, mlp, parts=ZOO_PARTS, softmax=False, pad_value=0.0, bf16=False, rtol=2e-5,
           output="pooled"):
    weights, biases, acts, alphas = mlp
    got = ops.recopt_din_attention(q, keys, mask, weights, biases, activations=acts,
                                   alphas=alphas, parts=parts, softmax=softmax, pad_value=pad_value,
                                   weights_bf16=bf16, output=output).numpy()
    want = reference.din_attention(q, keys, mask, weights, biases, acts, alphas, parts, softmax, pad_value,
                                   bf16, output).numpy()
    assert got.shape == want.shape == (q.shape if output == "pooled" else mask.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.sqrt(keys.shape[1] * q.shape[1]))
    return got


@pytest.mark.parametrize("batch", [0, 1, 7, 512])
@pytest.mark.parametrize("softmax", [False, True])
def test_zoo_attention_matches(ops, batch, softmax):
    q, keys, mask = _inputs(batch, 50, 32)
    _check(ops, q, keys, mask, _mlp(4 * 32, (80, 40, 1), ("sigmoid", "sigmoid", "linear")), softmax=softmax,
           pad_value=-2.0 ** 32 + 1 if softmax else 0.0)


@pytest.mark.parametrize("parts", [["q", "k", "q-k", "q*k"], ["k", "q*k", "k-q", "q"], ["q*k"], ["k", "q"],
                                   ["q*k", "q*k", "q-k"]])
@pytest.mark.parametrize("d", [1, 5, 16, 33])
def test_any_part_order_and_width(ops, parts, d):
    q, keys, mask = _inputs(6, 11, d)
    _check(ops, q, keys, mask, _mlp(len(parts) * d, (19, 1), ("relu", "linear")), parts=parts)


@pytest.mark.parametrize("units, acts", [((1,), ("linear",)), ((7, 1), ("leaky_relu", "sigmoid")),
                                         ((36, 18, 9, 1), ("gelu", "tanh", "swish", "linear")),
                                         ((200, 1), ("softplus", "linear"))])
def test_layer_stacks(ops, units, acts):
    q, keys, mask = _inputs(9, 97, 8)   # T spans more than one 48-row block
    _check(ops, q, keys, mask, _mlp(4 * 8, units, acts))


def test_zero_length_sequences(ops):
    """All masked: raw weights give zeros; softmax of equal pads averages the
    keys, as the source graph's where + softmax does."""
    q, keys, mask = _inputs(4, 10, 6, lengths=[0, 0, 3, 10])
    mlp = _mlp(24, (8, 1), ("sigmoid", "linear"))
    raw = _check(ops, q, keys, mask, mlp)
    np.testing.assert_array_equal(raw[:2], 0)
    soft = _check(ops, q, keys, mask, mlp, softmax=True, pad_value=-1e9)
    np.testing.assert_allclose(soft[:2], keys[:2].mean(axis=1), rtol=1e-5, atol=1e-6)
    _check(ops, q, keys[:, :0], mask[:, :0], mlp)   # T = 0


def test_bf16_weights(ops):
    q, keys, mask = _inputs(5, 20, 16)
    _check(ops, q, keys, mask, _mlp(64, (24, 12, 1), ("relu", "relu", "linear")), bf16=True, rtol=1e-4)


def test_nan_in_a_key_reaches_only_its_example(ops):
    q, keys, mask = _inputs(3, 8, 4, lengths=[8, 8, 8])
    keys[1, 2, 0] = np.nan
    weights, biases, acts, alphas = _mlp(16, (6, 1), ("relu", "linear"))
    got = ops.recopt_din_attention(q, keys, mask, weights, biases, activations=acts, alphas=alphas,
                                   parts=ZOO_PARTS).numpy()
    want = reference.din_attention(q, keys, mask, weights, biases, acts, alphas, ZOO_PARTS).numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[1]).any() and not np.isnan(got[[0, 2]]).any()


def test_bad_inputs_are_named(ops):
    q, keys, mask = _inputs(2, 4, 3)
    weights, biases, acts, alphas = _mlp(12, (5, 1), ("relu", "linear"))
    call = dict(activations=acts, alphas=alphas)
    err = (tf.errors.InvalidArgumentError, ValueError)
    with pytest.raises(err, match=r"unknown part .q\+k."):
        ops.recopt_din_attention(q, keys, mask, weights, biases, parts=["q", "k", "q-k", "q+k"], **call)
    with pytest.raises(err, match="layer 0: weight has 12 rows but 3 parts"):
        ops.recopt_din_attention(q, keys, mask, weights, biases, parts=["q", "k", "q*k"], **call)
    with pytest.raises(err, match="disagree|Dimensions must be equal"):
        ops.recopt_din_attention(q, keys, mask[:, :3], weights, biases, parts=ZOO_PARTS, **call)
    with pytest.raises(err, match="one score"):
        ops.recopt_din_attention(q, keys, mask, weights[:1], biases[:1], activations=["relu"],
                                 alphas=[0.0], parts=ZOO_PARTS)


@pytest.mark.parametrize("batch", [0, 1, 7, 512])
@pytest.mark.parametrize("softmax", [False, True])
def test_weights_output(ops, batch, softmax):
    """output="weights": DIEN's [B, T] attention scores, not the pooled keys."""
    q, keys, mask = _inputs(batch, 50, 32)
    mlp = _mlp(4 * 32, (80, 40, 1), ("sigmoid", "sigmoid", "linear"))
    got = _check(ops, q, keys, mask, mlp, softmax=softmax, pad_value=-2.0 ** 32 + 1 if softmax else 0.0,
                 output="weights")
    if softmax and batch:
        np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    pooled = _check(ops, q, keys, mask, mlp, softmax=softmax, pad_value=-2.0 ** 32 + 1 if softmax else 0.0)
    np.testing.assert_allclose(pooled, np.einsum("bt,btd->bd", got, keys), rtol=1e-4, atol=1e-5)


def test_weights_output_zero_length(ops):
    q, keys, mask = _inputs(3, 6, 4, lengths=[0, 2, 6])
    mlp = _mlp(16, (5, 1), ("relu", "linear"))
    soft = _check(ops, q, keys, mask, mlp, softmax=True, pad_value=-1e9, output="weights")
    np.testing.assert_allclose(soft[0], np.full(6, 1 / 6), rtol=1e-6)
    np.testing.assert_array_equal(soft[1, 2:], 0)
    assert _check(ops, q, keys[:, :0], mask[:, :0], mlp, output="weights").shape == (3, 0)
