r"""Recognises a pooled lookup over a RaggedTensor of ids.

`tf.reduce_sum(tf.nn.embedding_lookup(table, rt), axis=1)` (and tf_keras'
Embedding on ragged input, which maps the gather over rt.flat_values) is

    UnsortedSegmentSum(Gather(table, values), row_ids(splits), nrows(splits))    sum
    RealDiv(<that>, UnsortedSegmentSum(OnesLike(<the gather>), <same>))           mean

and becomes a "ragged" feature reading values and row_splits. row_ids and
nrows are some dozens of index ops whose spelling changes between
TensorFlow versions (tf.repeat, boolean_mask, Range, StridedSlice), so they
are recognised by what they compute: grappler_passes.ragged_rows probes them
on a few row_splits vectors (or row lengths: from_row_lengths; the op then
reads concat([0], cumsum(lengths)), built at emit time). The mean of an empty row is 0/0 = NaN there,
and the op does the same for ragged means.
"""
import dataclasses
from typing import Optional

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes.embedding_match import Lookup, PlannedTensor, float_output, ids_rank, resolve_ids
from grappler_passes.embedding_tables import gather_rows
from grappler_passes.ragged_rows import INT_TYPES, ragged_rows
from grappler_passes.shapes import dtype_of
from custom_ops.spec.embedding import EmbeddingFeature

@dataclasses.dataclass
class SplitsFromLengths(PlannedTensor):
    """concat([0], cumsum(lengths)): the row_splits the op reads for a
    RaggedTensor built from row lengths."""
    source: str
    dtype: int
    name: str

    def build(self, view):
        axis = view.add_const(f"{self.name}/axis", np.int32(0))
        zero = view.add_const(f"{self.name}/zero", np.zeros([1], INT_TYPES[self.dtype]))
        total = view.add_node("Cumsum", f"{self.name}/cumsum", [self.source, axis.name], {
            "T": self.dtype, "Tidx": types_pb2.DT_INT32, "exclusive": False, "reverse": False})
        return view.add_node("ConcatV2", self.name, [zero.name, total.name, axis.name], {
            "T": self.dtype, "N": 2, "Tidx": types_pb2.DT_INT32}).name


def _ones_like_of(view, tensor):
    """x for OnesLike(x) or Fill(Shape(x), 1) (tf.ones_like's two forms), else None."""
    node = view.node(view.skip_identity(tensor))
    if node is not None and node.op == "OnesLike":
        return view.source(node.input[0])
    if node is None or node.op != "Fill" or view.const_value(node.input[1]) != 1:
        return None
    shape = view.node(view.skip_identity(node.input[0]))
    return view.source(shape.input[0]) if shape is not None and shape.op == "Shape" else None


def _counts(view, shapes, count, gather, rows):
    """True if `count` is UnsortedSegmentSum(ones_like(gather)) over the rows
    `rows` (TensorFlow builds a second row-id chain for it)."""
    if count is None or count.op != "UnsortedSegmentSum":
        return False
    if _ones_like_of(view, count.input[0]) != view.source(gather.name):
        return False
    return ragged_rows(view, shapes, count.input[1], count.input[2]) == rows


def match_ragged(node, view, shapes, resources) -> Optional[Lookup]:
    combiner, total, count = "sum", node, None
    if node.op in ("RealDiv", "Div"):
        total, count = (view.node(view.skip_identity(i)) for i in node.input[:2])
        combiner = "mean"
    if total is None or total.op != "UnsortedSegmentSum" or total.attr["T"].type != types_pb2.DT_FLOAT:
        return None
    gather = view.node(view.skip_identity(total.input[0]))
    found = gather_rows(gather, view, shapes, resources) if gather is not None and float_output(gather) else None
    if found is None:
        return None
    table, indices, shard_nodes = found
    ids, buckets, negative = resolve_ids(view, indices, table)
    if ids_rank(shapes, ids) != 1:
        return None
    rows = ragged_rows(view, shapes, total.input[1], total.input[2])
    if rows is None or (count is not None and not _counts(view, shapes, count, gather, rows)):
        return None
    kind, source = rows
    splits = source if kind == "splits" else \
        SplitsFromLengths(source, dtype_of(shapes, source), f"{node.name}/recopt_row_splits")
    feature = EmbeddingFeature(0, layout="ragged", combiner=combiner, hash_buckets=buckets, negative_ids=negative)
    inner = [gather.name] + shard_nodes + ([total.name, count.name] if count is not None else [])
    return Lookup(node, table, ids, [splits], feature, True, [ids, source], inner)
