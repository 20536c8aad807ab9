"""fuse_cross: DeepCTR's CrossNet (vector parameterisation) becomes one
Recopt>CrossNetwork with the same answers; near misses stay stock."""
import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(53)
DIM = 21
X = RNG.standard_normal((11, DIM)).astype(np.float32)
XSPEC = tf.TensorSpec([None, DIM], tf.float32)
KERNELS = [tf.constant((RNG.standard_normal((DIM, 1)) / np.sqrt(DIM)).astype(np.float32)) for _ in range(4)]
BIASES = [tf.constant(RNG.standard_normal((DIM, 1)).astype(np.float32)) for _ in range(4)]


def cross_net(inputs, layers, bias=lambda i, x: BIASES[i], leak=False):
    """DeepCTR 0.9.4 CrossNet.call, parameterization='vector'."""
    x_0 = tf.expand_dims(inputs, axis=2)
    x_l = x_0
    dots = []
    for i in range(layers):
        xl_w = tf.tensordot(x_l, KERNELS[i], axes=(1, 0))
        dot_ = tf.matmul(x_0, xl_w)
        dots.append(dot_)
        x_l = dot_ + bias(i, x_l) + x_l
    out = tf.squeeze(x_l, axis=2)
    return (out, dots[0]) if leak else out


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_cross")


@pytest.mark.parametrize("layers", [1, 2, 4])
def test_cross_net_fuses_with_parity(layers):
    ops, _ = _optimize(lambda x: cross_net(x, layers))
    assert ops.count("Recopt>CrossNetwork") == 1, ops
    assert not {"BatchMatMulV2", "Transpose", "ExpandDims", "Squeeze"} & set(ops), ops


def test_bias_from_the_input_is_left_alone():
    ops, skips = _optimize(lambda x: cross_net(x, 2, bias=lambda i, x_l: x_l * 0.5))
    assert "Recopt>CrossNetwork" not in ops, ops
    assert any("does not add a cross term" in why or "constant" in why for why in skips), skips


def test_cross_term_used_elsewhere_is_left_alone():
    ops, skips = _optimize(lambda x: cross_net(x, 2, leak=True))
    assert "Recopt>CrossNetwork" not in ops, ops
    assert any("also used outside" in why for why in skips), skips
