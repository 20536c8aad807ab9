"""fuse_bilinear: FiBiNET's bilinear interaction in DeepCTR's three
bilinear_types, on split fields or per-field inputs, becomes one
Recopt>BilinearInteraction with the same answers; near misses stay stock
and say why."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity
from tests.test_bilinear_op import _deepctr

RNG = np.random.default_rng(23)
F, D = 6, 8
P = F * (F - 1) // 2
X = RNG.standard_normal((13, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)
W = [tf.constant(RNG.standard_normal((D, D)).astype(np.float32)) for _ in range(P)]
BIAS = tf.constant(RNG.standard_normal(D).astype(np.float32))


def _senet_like(x):
    """FiBiNET: the fields reweighted, then split again (SENETLayer's output)."""
    scale = tf.nn.relu(tf.reduce_mean(x, axis=-1, keepdims=True))
    return tf.split(x * scale, F, axis=1)


def _pairs_concat(fields, pair):
    return tf.concat([pair(fields[i], fields[j], k) for k, (i, j) in enumerate(itertools.combinations(range(F), 2))],
                     axis=1)


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_bilinear")


FORMS = {
    "interaction": lambda x: _deepctr(x, W, "interaction"),
    "each": lambda x: _deepctr(x, W, "each"),
    "all": lambda x: _deepctr(x, W, "all"),
    "senet_fields": lambda x: _pairs_concat(_senet_like(x), lambda a, b, k: tf.tensordot(a, W[k], axes=(-1, 0)) * b),
    "operands_swapped_with_bias": lambda x: _pairs_concat(
        tf.split(x, F, axis=1), lambda a, b, k: b * (tf.tensordot(a, W[k], axes=(-1, 0)) + BIAS)),
    "two_layers_concatenated": lambda x: tf.concat([_deepctr(x, W, "interaction"),
                                                    _deepctr(tf.nn.relu(x), W, "each")], axis=1),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_bilinear_forms_fuse_with_parity(form):
    ops, _ = _optimize(FORMS[form])
    assert ops.count("Recopt>BilinearInteraction") >= 1, ops
    assert "Recopt>FusedMLP" not in ops, ops
    assert "MatMul" not in ops and "BatchMatMulV2" not in ops, ops


def _leaky_each(x):
    """bilinear_type "each" whose field-0 projection is also read outside."""
    fields = tf.split(x, F, axis=1)
    vidots = [tf.tensordot(fields[i], W[i], axes=(-1, 0)) for i in range(F - 1)]
    pairs = tf.concat([vidots[i] * fields[j] for i, j in itertools.combinations(range(F), 2)], axis=1)
    return pairs + vidots[0]


def _with_extra_input(x):
    fields = tf.split(x, F, axis=1)
    return tf.concat([tf.tensordot(fields[i], W[k], axes=(-1, 0)) * fields[j]
                      for k, (i, j) in enumerate(itertools.combinations(range(F), 2))] + [fields[0]], axis=1)


NEAR_MISSES = {
    "extra_input": (_with_extra_input, "is not a pair product"),
    "projection_used_elsewhere": (_leaky_each, "also used outside"),
    "activated_projection": (lambda x: _pairs_concat(tf.split(x, F, axis=1), lambda a, b, k: (
        tf.nn.relu(tf.tensordot(a, W[k], axes=(-1, 0))) * b)), "is not one linear layer"),
}


@pytest.mark.parametrize("case", sorted(NEAR_MISSES))
def test_near_misses_stay_stock_with_a_reason(case):
    fn, reason = NEAR_MISSES[case]
    ops, skips = _optimize(fn)
    assert "Recopt>BilinearInteraction" not in ops, ops
    assert any(reason in why for why in skips), skips
