r"""Recognises the sparse embedding lookups (SparseTensor ids):

    SparseSegmentSum|Mean|SqrtN[WithNumSegments](table, ids, segment_ids[, n])
        (tf.nn.embedding_lookup_sparse; also its older Unique + Gather form)
    safe_embedding_lookup_sparse (feature columns): the SparseSegment* above,
        or the weighted chain below, on SparseFillEmptyRows of the ids (and
        weights) retained >= 0 (and, unless sum, with weight > 0), then
        Select(Tile(empty rows), ZerosLike, lookup) [-> Reshape]     segments_n over the retained ids
    weighted embedding_lookup_sparse (sp_weights given):
        rows = Gather(Gather(table, Unique(ids)), Unique:1) | Gather(table, ids)
        e = SegmentSum(Mul(rows, Reshape(w, [n, 1])), segment_ids)              sum
        DivNoNan(e, SegmentSum(Reshape(w), segment_ids))                         mean
        DivNoNan(e, Sqrt(SegmentSum(Pow(Reshape(w), 2), segment_ids)))           sqrtn
"""
import dataclasses
from typing import Optional

import numpy as np
from tensorflow.core.framework import types_pb2

from custom_ops.spec.embedding import EmbeddingFeature
from grappler_passes.embedding_match import Lookup, PlannedTensor, float_output, ids_rank, resolve_ids
from grappler_passes.embedding_tables import gather_rows, resolve_table
from grappler_passes.graph_view import is_stateful, public_attrs
from grappler_passes.shapes import shape_of

_SEGMENT_COMBINERS = {"SparseSegmentSum": "sum", "SparseSegmentMean": "mean", "SparseSegmentSqrtN": "sqrtn"}


def match_segments(node, view, shapes, resources) -> Optional[Lookup]:
    """embedding_lookup_sparse: SparseSegment* over the table (or Gather(table, Unique))."""
    base = node.op.replace("WithNumSegments", "")
    if base not in _SEGMENT_COMBINERS or not float_output(node):
        return None
    data, indices, segments = node.input[:3]
    table, inner = resolve_table(view, data, resources), []
    if table is None:  # the Unique + Gather form
        gather = view.node(view.skip_identity(data))
        unique = view.node(view.skip_identity(indices))
        found = gather_rows(gather, view, shapes, resources) if gather is not None else None
        if found is None or unique is None or unique.op != "Unique" or \
                view.skip_identity(found[1]) != unique.name or indices != f"{unique.name}:1":
            return None
        table, indices, inner = found[0], unique.input[0], [gather.name] + found[2]
    ids, buckets, _ = resolve_ids(view, indices, table)
    with_n = node.op.endswith("WithNumSegments")
    parts = [segments] + ([node.input[3]] if with_n else [])
    feature = EmbeddingFeature(0, layout="segments_n" if with_n else "segments",
                               combiner=_SEGMENT_COMBINERS[base], hash_buckets=buckets)
    return Lookup(node, table, ids, parts, feature, True, [ids] + parts, inner)


def _unique_rows(view, node, shapes, resources):
    """(table, ids, inner) of Gather(Gather(table, Unique(ids):0), Unique:1) or Gather(table, ids)."""
    if node is None:
        return None
    found = gather_rows(node, view, shapes, resources)
    if found is not None:
        return found
    if node.op != "GatherV2" or view.const_int(node.input[2]) != 0:
        return None
    inner_gather = view.node(view.skip_identity(node.input[0]))
    unique = view.node(view.skip_identity(node.input[1]))
    found = gather_rows(inner_gather, view, shapes, resources) if inner_gather is not None else None
    if (found is None or unique is None or unique.op != "Unique" or view.skip_identity(found[1]) != unique.name
            or view.skip_identity(node.input[1]) != f"{unique.name}:1"):
        return None
    return found[0], unique.input[0], [inner_gather.name] + found[2]


def _weighted_sum(view, node, shapes, resources):
    """(table, ids, segments, reshaped weights node, inner) of SegmentSum(Mul(rows, Reshape(w)), segments)."""
    if node is None or node.op != "SegmentSum" or node.attr["T"].type != types_pb2.DT_FLOAT:
        return None
    mul = view.node(view.skip_identity(node.input[0]))
    if mul is None or mul.op != "Mul":
        return None
    for a, b in ((0, 1), (1, 0)):
        shaped = view.node(view.skip_identity(mul.input[b]))
        found = _unique_rows(view, view.node(view.skip_identity(mul.input[a])), shapes, resources)
        if found is not None and shaped is not None and shaped.op == "Reshape":
            table, ids, inner = found
            rows = view.skip_identity(mul.input[a]).split(":")[0]
            return table, ids, node.input[1], shaped, inner + [mul.name, rows]
    return None


def _weight_norm(view, tensor, shaped, segments):
    """"mean" for SegmentSum(w, segments), "sqrtn" for Sqrt(SegmentSum(Pow(w, 2), segments)), else None."""
    node = view.node(view.skip_identity(tensor))
    combiner = "mean"
    if node is not None and node.op == "Sqrt":
        node, combiner = view.node(view.skip_identity(node.input[0])), "sqrtn"
    if node is None or node.op != "SegmentSum" or node.input[1] != segments:
        return None
    data = view.node(view.skip_identity(node.input[0]))
    if combiner == "sqrtn":
        if data is None or data.op != "Pow" or view.const_scalar(data.input[1]) != 2.0:
            return None
        data = view.node(view.skip_identity(data.input[0]))
    return combiner if data is not None and data.name == shaped.name else None


def match_weighted_segments(node, view, shapes, resources) -> Optional[Lookup]:
    """Weighted embedding_lookup_sparse: the SegmentSum (sum) or DivNoNan (mean, sqrtn) root."""
    combiner, total = "sum", node
    if node.op == "DivNoNan":
        total = view.node(view.skip_identity(node.input[0]))
    found = _weighted_sum(view, total, shapes, resources)
    if found is None:
        return None
    table, indices, segments, shaped, inner = found
    if node.op == "DivNoNan":
        combiner = _weight_norm(view, node.input[1], shaped, segments)
        if combiner is None:
            return None
        inner.append(total.name)
    weights = view.skip_identity(shaped.input[0])
    if ids_rank(shapes, weights) != 1 or shape_of(shapes, weights) != shape_of(shapes, view.skip_identity(indices)):
        return None
    ids, buckets, _ = resolve_ids(view, indices, table)
    feature = EmbeddingFeature(0, layout="segments", combiner=combiner, hash_buckets=buckets, weighted=True)
    return Lookup(node, table, ids, [segments], feature, True, [ids, segments, weights], inner, weights)


def _column_zero(view, tensor):
    """The StridedSlice x[:, 0] of a [n, 2] tensor: its input, else None."""
    node = view.node(view.skip_identity(tensor))
    if node is None or node.op != "StridedSlice" or node.attr["shrink_axis_mask"].i != 2 or \
            node.attr["new_axis_mask"].i or node.attr["ellipsis_mask"].i:
        return None
    begin, end, strides = (view.const_value(i) for i in node.input[1:4])
    if begin is None or end is None or strides is None or list(strides) != [1, 1] or begin[1] != 0 or end[1] != 1 \
            or not (node.attr["begin_mask"].i & 1 and node.attr["end_mask"].i & 1):
        return None
    return node.input[0]


@dataclasses.dataclass
class IndexZero(PlannedTensor):
    """GatherV2 of index 0 along `axis` of an int64 tensor: a sparse
    tensor's row ids (indices[:, 0]) or row count (dense_shape[0])."""
    source: str
    axis: int
    name: str
    dtype: int = types_pb2.DT_INT64

    def build(self, view):
        zero = view.add_const(f"{self.name}/index", np.int64(0))
        ax = view.add_const(f"{self.name}/axis", np.int32(self.axis))
        return view.add_node("GatherV2", self.name, [self.source, zero.name, ax.name], {
            "Tparams": types_pb2.DT_INT64, "Tindices": types_pb2.DT_INT64, "Taxis": types_pb2.DT_INT32,
            "batch_dims": 0}).name


def match_safe_segments(node, view, shapes, resources) -> Optional[Lookup]:
    """safe_embedding_lookup_sparse (tf.feature_column's embedding columns):
    negative ids retained away, SparseFillEmptyRows, the SparseSegment*
    lookup, and Select(empty row, zeros, lookup), maybe Reshape'd back. The
    fused op takes the retained ids and their rows before the fill: its
    empty rows are zeros already, so the fill and the Select go."""
    root, select = node, node
    if node.op == "Reshape":
        select = view.node(view.skip_identity(node.input[0]))
        if ids_rank(shapes, node.name) != 2:
            root = select   # a higher-rank sparse input: the Select's [rows, d] is the lookup
    if select is None or select.op not in ("Select", "SelectV2"):
        return None
    cond, zeros, seg = (view.skip_identity(i) for i in select.input[:3])
    zeros_node, tile = view.node(zeros), view.node(cond)
    if zeros_node is None or zeros_node.op != "ZerosLike" or view.skip_identity(zeros_node.input[0]) != seg or \
            tile is None or tile.op != "Tile":
        return None
    empty = view.node(view.skip_identity(tile.input[0]))
    fill_name = None if empty is None or empty.op != "Reshape" else view.skip_identity(empty.input[0])
    fill = view.node(fill_name) if fill_name else None
    if fill is None or fill.op != "SparseFillEmptyRows" or not fill_name.endswith(":2"):
        return None
    inner = match_segments(view.node(seg), view, shapes, resources) or \
        match_weighted_segments(view.node(seg), view, shapes, resources)
    if inner is None or inner.feature.layout != "segments" or inner.feature.hash_buckets or \
            inner.ids != f"{fill.name}:1" or view.source(_segment_rows(view, inner.parts[0]) or "") != fill.name:
        return None
    indices, ids, dense_shape = (view.skip_identity(i) for i in fill.input[:3])
    weights = _filled_weights(view, inner.weights, fill) if inner.feature.weighted else None
    if inner.feature.weighted and weights is None:
        return None
    parts = [IndexZero(indices, 1, f"{root.name}/recopt_rows"),
             IndexZero(dense_shape, 0, f"{root.name}/recopt_num_rows")]
    feature = dataclasses.replace(inner.feature, layout="segments_n")
    replaced = inner.inner + [view.node(seg).name] + ([select.name] if root is not select else [])
    sources = [ids, indices, dense_shape] + ([weights] if weights else [])
    return Lookup(root, inner.table, ids, parts, feature, True, sources, replaced, weights)


def _segment_rows(view, tensor):
    """x of x[:, 0] behind segment ids, through the int32 Cast that the
    weighted lookup's SegmentSum takes."""
    node = view.node(view.skip_identity(tensor))
    if node is not None and node.op == "Cast" and node.attr["DstT"].type == types_pb2.DT_INT32:
        tensor = node.input[0]
    return _column_zero(view, tensor)


def _filled_weights(view, tensor, fill):
    """The weights before SparseFillEmptyRows when `tensor` is that fill's
    values and the fill's indices are computed as the ids' fill's are (safe
    lookups retain ids and weights by the same masks, on the ids' indices):
    then the fused op can take ids and weights as they were retained."""
    name = view.skip_identity(tensor) if tensor else ""
    node = view.node(name.split(":")[0]) if name.endswith(":1") else None
    if node is None or node.op != "SparseFillEmptyRows" or \
            not all(_same_computation(view, a, b) for a, b in zip(node.input[:3:2], fill.input[:3:2])):
        return None
    return view.skip_identity(node.input[1])


def _same_computation(view, a, b, depth=8):
    """True when tensors a and b are the same output of the same op with the
    same attrs over inputs that are themselves the same computation (the
    two Where(mask) a pair of sparse_retain calls build), Consts by value.
    Stateful ops and placeholders are only ever the same when they are the
    same node."""
    a, b = view.skip_identity(a), view.skip_identity(b)
    if view.source(a) == view.source(b):
        return True
    na, nb = view.node(a.split(":")[0]), view.node(b.split(":")[0])
    if depth == 0 or na is None or nb is None or na.op != nb.op or a.partition(":")[2] != b.partition(":")[2] \
            or is_stateful(na.op) or na.op == "Placeholder" or public_attrs(na) != public_attrs(nb):
        return False
    if na.op == "Const":
        return True   # equal attrs: equal values
    ins_a, ins_b = view.data_inputs(na), view.data_inputs(nb)
    return len(ins_a) == len(ins_b) and all(_same_computation(view, x, y, depth - 1) for x, y in zip(ins_a, ins_b))


# Longest first: a weighted mean's DivNoNan root before the SegmentSum inside
# it, a safe lookup's Reshape/Select before the SparseSegment* inside it.
MATCHERS = (match_safe_segments, match_weighted_segments, match_segments)
