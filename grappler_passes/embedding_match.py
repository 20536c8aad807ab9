r"""Recognises one embedding lookup over dense ids, whatever form the model
author wrote it in, and holds what every lookup matcher shares: Lookup (the
plan a matcher returns), table and id resolution. The sparse forms live in
embedding_sparse.py, the ragged one in embedding_ragged.py.

Tables: a float32/bfloat16 Const, or a resource variable read through
ReadVariableOp (or handed to ResourceGather directly), or a list of them
that tf.nn.embedding_lookup partitions ids over (embedding_tables.py): every
form takes either. Ids may come through:

    strings -> StringToHashBucketFast(n)      fused as hash_buckets = n
    ints    -> FloorMod(ids, Const n)         fused as hash_buckets = n
    ids -> SelectV2(Less(ids, 0), AddV2(ids, rows), ids)    Keras 3 `take`:
                                              fused as negative_ids = "wrap"

Lookups (the root is the node whose output is replaced):

    GatherV2(table, ids, axis=0) | ResourceGather(var, ids)         combiner none
    Sum | Mean(<that gather>, axis=1) over [batch, n] ids           sum / mean

Matchers only read the graph. A partition input the op needs and the graph
does not hold yet (row_splits from row lengths, row ids from a sparse
tensor's indices) is a PlannedTensor that the emitter builds.
"""
import dataclasses
from typing import List, Optional

from tensorflow.core.framework import types_pb2

from grappler_passes.embedding_tables import Table, gather_rows
from grappler_passes.shapes import shape_of
from custom_ops.spec.embedding import EmbeddingFeature

class PlannedTensor:
    """A tensor the fused op will read that the emitter adds to the graph:
    `source` is what it is computed from (for dependency checks), `dtype`
    its DataType, build(view) adds it and returns its name."""
    source: str
    dtype: int

    def build(self, view):
        raise NotImplementedError


def tensor_of(view, part):
    """The tensor name of a partition input, building a planned one."""
    return part.build(view) if isinstance(part, PlannedTensor) else part


@dataclasses.dataclass
class Lookup:
    root: object                # NodeDef whose output :0 the fused op replaces
    table: Table
    ids: str
    parts: List[object]         # partition inputs: tensor names or PlannedTensors
    feature: EmbeddingFeature   # .table is filled in per fused op
    rank2: bool                 # output is [batch, width]: can join a concat
    ids_sources: List[str]      # tensors the lookup reads (for dependency checks)
    inner: List[str] = dataclasses.field(default_factory=list)  # replaced nodes besides the root
    weights: Optional[str] = None  # per-id weights (feature.weighted)


def _keras_wrap(view, tensor, table):
    """ids if `tensor` is Keras' SelectV2(ids < 0, ids + rows, ids), else None."""
    node = view.node(view.skip_identity(tensor))
    if node is None or node.op != "SelectV2" or table.shards:
        return None
    cond, then, other = (view.skip_identity(i) for i in view.data_inputs(node))
    less, add = view.node(cond), view.node(then)
    if less is None or less.op != "Less" or add is None or add.op not in ("AddV2", "Add"):
        return None
    ids = other
    if view.skip_identity(less.input[0]) != ids or view.const_int(less.input[1]) != 0:
        return None
    add_in = [view.skip_identity(i) for i in add.input]
    if ids not in add_in:
        return None
    rows = add_in[1 - add_in.index(ids)]
    return ids if _is_table_rows(view, rows, table) else None


def _is_table_rows(view, tensor, table, depth=4):
    """True if `tensor` is table.rows: a Const, or Cast/StridedSlice of Shape(table)."""
    value = view.const_int(tensor)
    if value is not None:
        return value == table.rows
    node = view.node(tensor)
    for _ in range(depth):
        if node is None:
            return False
        if node.op in ("Shape", "VariableShape"):
            src = view.node(view.skip_identity(node.input[0]))
            if src is not None and src.op == "ReadVariableOp":
                src = view.node(view.skip_identity(src.input[0]))
            return src is not None and src.name == view.node(table.tensor).name
        if node.op not in ("Cast", "StridedSlice"):
            return False
        node = view.node(view.skip_identity(node.input[0]))
    return False


def _bucketing(view, tensor):
    """(raw ids, buckets) through StringToHashBucketFast / FloorMod, else (tensor, 0)."""
    node = view.node(view.skip_identity(tensor))
    if node is not None and node.op == "StringToHashBucketFast":
        return view.skip_identity(node.input[0]), int(node.attr["num_buckets"].i)
    if node is not None and node.op == "FloorMod":
        n = view.const_int(node.input[1])
        if n is not None and n > 0 and node.attr["T"].type in (types_pb2.DT_INT32, types_pb2.DT_INT64):
            return view.skip_identity(node.input[0]), n
    return tensor, 0


def resolve_ids(view, tensor, table):
    """(ids tensor, hash_buckets, negative_ids) for a gather's indices input."""
    wrapped = _keras_wrap(view, tensor, table)
    negative = "error"
    if wrapped is not None:
        tensor, negative = wrapped, "wrap"
    ids, buckets = _bucketing(view, view.skip_identity(tensor))
    if buckets and negative == "wrap":
        negative = "error"  # bucketed ids are never negative
    return ids, buckets, negative


def float_output(node):
    """The fused op writes float32: a bfloat16 lookup keeps its own ops."""
    for key in ("Tparams", "dtype", "T"):
        if key in node.attr:
            return node.attr[key].type == types_pb2.DT_FLOAT
    return False


def ids_rank(shapes, tensor):
    shape = shape_of(shapes, tensor)
    return None if shape is None else len(shape)


def match_gather(node, view, shapes, resources) -> Optional[Lookup]:
    found = gather_rows(node, view, shapes, resources) if float_output(node) else None
    if found is None:
        return None
    table, indices, inner = found
    ids, buckets, negative = resolve_ids(view, indices, table)
    rank = ids_rank(shapes, ids)
    if rank is None or rank < 1:
        return None
    feature = EmbeddingFeature(0, hash_buckets=buckets, negative_ids=negative)
    return Lookup(node, table, ids, [], feature, rank == 1, [ids], inner)


def match_pooled(node, view, shapes, resources) -> Optional[Lookup]:
    """Sum/Mean over axis 1 of a gather with [batch, n] ids."""
    if node.op not in ("Sum", "Mean") or node.attr["keep_dims"].b:
        return None
    gather = view.node(view.skip_identity(node.input[0]))
    if gather is None or len(view.consumers(gather.name)) != 1 or gather.name in view.protected:
        return None
    inner = match_gather(gather, view, shapes, resources)
    if inner is None or ids_rank(shapes, inner.ids) != 2 or view.const_int(node.input[1]) not in (1, -2):
        return None
    inner.feature = dataclasses.replace(inner.feature, combiner="sum" if node.op == "Sum" else "mean")
    inner.root, inner.rank2, inner.inner = node, True, [gather.name] + inner.inner
    return inner




MATCHERS = (match_pooled, match_gather)  # the pooled Sum/Mean root before its gather
