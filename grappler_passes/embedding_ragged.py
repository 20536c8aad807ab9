r"""Recognises a pooled lookup over a RaggedTensor of ids.

`tf.reduce_sum(tf.nn.embedding_lookup(table, rt), axis=1)` (and tf_keras'
Embedding on ragged input, which maps the gather over rt.flat_values) is

    UnsortedSegmentSum(Gather(table, values), row_ids(splits), nrows(splits))    sum
    RealDiv(<that>, UnsortedSegmentSum(OnesLike(<the gather>), <same>))           mean

and becomes a "ragged" feature reading values and row_splits. row_ids and
nrows are some dozens of index ops whose spelling changes between
TensorFlow versions (tf.repeat, boolean_mask, Range, StridedSlice), so they
are recognised by what they compute: grappler_passes.probe evaluates them
on a few row_splits vectors. The mean of an empty row is 0/0 = NaN there,
and the op does the same for ragged means.
"""
from typing import Optional

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import probe
from grappler_passes.embedding_match import Lookup, _float_output, _gather, _ids_rank, _resolve_ids
from grappler_passes.shapes import dtype_of
from tf_recopt.ops.embedding import EmbeddingFeature

_INT_TYPES = {types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64}
# Uneven rows, empty rows (first, middle, last), a single row, no rows.
_PROBE_SPLITS = ([0, 2, 2, 5, 6], [0, 0, 3, 3], [0, 4], [0], [0, 1, 2, 3, 3])


def _row_ids(splits):
    return np.repeat(np.arange(len(splits) - 1), np.diff(splits))


def ragged_splits(view, shapes, segments, num_segments) -> Optional[str]:
    """The row_splits tensor whose row ids and row count `segments` and
    `num_segments` are, or None."""
    found = probe.leaves(view, [segments, num_segments])
    if found is None or len(found) != 1:
        return None
    splits = found[0]
    np_type = _INT_TYPES.get(dtype_of(shapes, splits))
    if np_type is None or _ids_rank(shapes, splits) not in (1, None):
        return None
    probes = [[np.array(s, np_type)] for s in _PROBE_SPLITS]
    results = probe.evaluate(view, [segments, num_segments], [splits], probes)
    for s, got in zip(_PROBE_SPLITS, results):
        if got is None or not np.array_equal(got[0], _row_ids(s)) or int(got[1]) != len(s) - 1:
            return None
    return splits


def _ones_like_of(view, tensor):
    """x for OnesLike(x) or Fill(Shape(x), 1) (tf.ones_like's two forms), else None."""
    node = view.node(view.skip_identity(tensor))
    if node is not None and node.op == "OnesLike":
        return view.source(node.input[0])
    if node is None or node.op != "Fill" or view.const_value(node.input[1]) != 1:
        return None
    shape = view.node(view.skip_identity(node.input[0]))
    return view.source(shape.input[0]) if shape is not None and shape.op == "Shape" else None


def _counts(view, shapes, count, gather, splits):
    """True if `count` is UnsortedSegmentSum(ones_like(gather)) over the rows
    of `splits` (TensorFlow builds a second row-id chain for it)."""
    if count is None or count.op != "UnsortedSegmentSum":
        return False
    if _ones_like_of(view, count.input[0]) != view.source(gather.name):
        return False
    return ragged_splits(view, shapes, count.input[1], count.input[2]) == splits


def match_ragged(node, view, shapes, resources) -> Optional[Lookup]:
    combiner, total, count = "sum", node, None
    if node.op in ("RealDiv", "Div"):
        total, count = (view.node(view.skip_identity(i)) for i in node.input[:2])
        combiner = "mean"
    if total is None or total.op != "UnsortedSegmentSum" or total.attr["T"].type != types_pb2.DT_FLOAT:
        return None
    gather = view.node(view.skip_identity(total.input[0]))
    found = _gather(gather, view, resources) if gather is not None and _float_output(gather) else None
    if found is None:
        return None
    table, indices = found
    ids, buckets, negative = _resolve_ids(view, indices, table)
    if _ids_rank(shapes, ids) != 1:
        return None
    splits = ragged_splits(view, shapes, total.input[1], total.input[2])
    if splits is None or (count is not None and not _counts(view, shapes, count, gather, splits)):
        return None
    feature = EmbeddingFeature(0, layout="ragged", combiner=combiner, hash_buckets=buckets, negative_ids=negative)
    inner = [gather.name] + ([total.name, count.name] if count is not None else [])
    return Lookup(node, table, ids, [splits], feature, True, [ids, splits], inner)
