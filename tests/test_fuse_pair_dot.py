"""fuse_pair_dot: pairwise inner products of fields (DeepCTR's
InnerProductLayer in PNN and FGCNN, or gathers) become one
Recopt>DotInteraction with the same answers; near misses stay stock."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

from tests.graph_util import optimize_with_parity

RNG = np.random.default_rng(31)
F, D = 7, 8
ROWS, COLS = map(list, zip(*itertools.combinations(range(F), 2)))
X = RNG.standard_normal((11, F, D)).astype(np.float32)
XSPEC = tf.TensorSpec([None, F, D], tf.float32)


def inner_product_layer(fields, keepdims=True):
    """DeepCTR 0.9.4 InnerProductLayer.call (reduce_sum=True)."""
    p = tf.concat([fields[r] for r in ROWS], axis=1)
    q = tf.concat([fields[c] for c in COLS], axis=1)
    return tf.reduce_sum(p * q, axis=2, keepdims=keepdims)


def _fgcnn_fields(x):
    """FGCNN's unstack lambda: expand to [B, F, 1, d], unstack on axis 1."""
    return tf.unstack(tf.expand_dims(x, axis=2), F, 1)


def _optimize(fn):
    return optimize_with_parity(fn, [XSPEC], [X], "fuse_pair_dot")


FORMS = {
    "pnn_split_fields": lambda x: tf.keras.layers.Flatten()(inner_product_layer(tf.split(x, F, axis=1))),
    "fgcnn_unstacked_fields": lambda x: inner_product_layer(_fgcnn_fields(x)),
    "gathers_no_keepdims": lambda x: tf.reduce_sum(tf.gather(x, ROWS, axis=1) * tf.gather(x, COLS, axis=1), -1),
    "self_pairs_any_order": lambda x: tf.reduce_sum(tf.gather(x, [3, 0, 6, 6], axis=1) *
                                                    tf.gather(x, [1, 0, 2, 6], axis=1), -1),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_inner_products_fuse_with_parity(form):
    ops, _ = _optimize(FORMS[form])
    assert ops.count("Recopt>DotInteraction") == 1, ops
    assert "Mul" not in ops and "Sum" not in ops, ops


def test_sum_over_pairs_is_left_alone():
    ops, skips = _optimize(lambda x: tf.reduce_sum(tf.gather(x, ROWS, axis=1) * tf.gather(x, COLS, axis=1), 1))
    assert "Recopt>DotInteraction" not in ops, ops
    assert any("does not sum over the embedding axis" in why for why in skips), skips


def test_products_used_elsewhere_are_left_alone():
    def fn(x):
        e = tf.gather(x, ROWS, axis=1) * tf.gather(x, COLS, axis=1)
        return tf.reduce_sum(e, -1), tf.reduce_max(e, -1)
    ops, skips = _optimize(fn)
    assert "Recopt>DotInteraction" not in ops, ops
    assert any("outside the fused subgraph" in why for why in skips), skips
