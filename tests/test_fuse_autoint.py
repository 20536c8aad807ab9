"""fuse_autoint: AutoInt's interacting layer as DeepCTR writes it (heads
split on the last axis and stacked on a new axis 0) becomes one
Recopt>MultiHeadAttention with the same answers; near misses stay stock
and say why."""
import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(29)
F, E, H, D = 9, 8, 2, 4
X = RNG.standard_normal((13, F, E)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, E], tf.float32)
# Scaled so three stacked layers keep logits of order 1 (fp32 noise, not softmax blow-up).
WQ, WK, WV, WR = (tf.constant((RNG.standard_normal((E, H * D)) / np.sqrt(E)).astype(np.float32)) for _ in range(4))


def interacting_layer(x, scaling=False, residual=True, key_input=None, merge_axis=-1, project=None):
    """DeepCTR 0.9.4 InteractingLayer.call."""
    project = project or (lambda t, w: tf.tensordot(t, w, axes=(-1, 0)))
    querys = project(x, WQ)
    keys = project(x if key_input is None else key_input, WK)
    values = project(x, WV)
    querys, keys, values = (tf.stack(tf.split(t, H, axis=2)) for t in (querys, keys, values))
    inner = tf.matmul(querys, keys, transpose_b=True)
    if scaling:
        inner /= D ** 0.5
    att = tf.nn.softmax(inner, axis=-1)
    result = tf.matmul(att, values)
    result = tf.concat(tf.split(result, H), axis=merge_axis)
    result = tf.squeeze(result, axis=0) if merge_axis == -1 else tf.reshape(result, [-1, F, H * D])
    if residual:
        result += tf.tensordot(x, WR, axes=(-1, 0))
    return tf.nn.relu(result)


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_autoint")


FORMS = {
    "deepctr_default": lambda x: interacting_layer(x),
    "scaled": lambda x: interacting_layer(x, scaling=True),
    "no_residual": lambda x: interacting_layer(x, residual=False),
    "three_layers": lambda x: interacting_layer(interacting_layer(interacting_layer(x)[..., :E])[..., :E]),
    "einsum_projections": lambda x: interacting_layer(x, project=lambda t, w: tf.einsum("bfe,eh->bfh", t, w)),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_interacting_layer_fuses_with_parity(form):
    ops, _ = _optimize(FORMS[form])
    assert ops.count("Recopt>MultiHeadAttention") == (3 if form == "three_layers" else 1), ops
    assert not {"Softmax", "BatchMatMulV2", "Pack", "Split", "Squeeze"} & set(ops), ops


NEAR_MISSES = {
    "cross_attention": (lambda x: interacting_layer(x, key_input=tf.nn.relu(x)), "read different tensors"),
    "activated_projection": (lambda x: interacting_layer(x, project=lambda t, w: tf.nn.relu(
        tf.tensordot(t, w, axes=(-1, 0)))), "is not one linear projection"),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_stay_stock_with_a_reason(case):
    fn, reason = NEAR_MISSES[case]
    ops, skips = _optimize(fn)
    assert "Recopt>MultiHeadAttention" not in ops, ops
    assert any(reason in why for why in skips), skips


def test_heads_merged_on_another_axis_is_not_matched():
    """Heads concatenated on the batch axis then reshaped: not AutoInt's merge."""
    ops, _ = _optimize(lambda x: interacting_layer(x, merge_axis=1))
    assert "Recopt>MultiHeadAttention" not in ops, ops
