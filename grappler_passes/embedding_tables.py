r"""Which table a row gather reads: one tensor or variable, or a table split
into shards that tf.nn.embedding_lookup addresses as one.

    GatherV2(table, ids, axis=0) | ResourceGather(var, ids)

    tf.nn.embedding_lookup([s0, .., sk-1], ids)   (PartitionedVariable,
    ShardedVariable, a list of constants):
        flat = Reshape(ids, [-1])
        p, local = <partition_strategy "mod" or "div" of flat>
        rows = ParallelDynamicStitch(DynamicPartition(Range(Size(flat)), p, k),     (Size folded when static)
                                     [Gather(s_i, DynamicPartition(local, p, k):i)])
        Reshape(rows, Concat(Shape(ids), [d]))          <- the gather's root

The partition arithmetic is spelt differently by strategy, TensorFlow
version and static-ness of the shard shapes, so it is probed (see probe.py)
against both strategies' formulas rather than matched node by node.
"""
import dataclasses
from typing import Optional, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import probe
from grappler_passes.shapes import dtype_of, shape_of

_TABLE_TYPES = {types_pb2.DT_FLOAT, types_pb2.DT_BFLOAT16}
_STITCHES = ("ParallelDynamicStitch", "DynamicStitch")


@dataclasses.dataclass
class Table:
    tensor: str   # Const or resource tensor the fused op reads (shard 0 when sharded)
    rows: int     # all shards' rows together
    dim: int
    shards: Tuple[str, ...] = ()   # > 1 tensors: a partitioned table
    partitioning: str = "div"      # its partition_strategy

    @property
    def inputs(self):
        return self.shards or (self.tensor,)

    @property
    def key(self):
        """Equal for lookups that read the same table the same way."""
        return (self.partitioning,) + self.shards if self.shards else (self.tensor,)


def resolve_table(view, tensor, resources):
    """Table behind a gather's params (Const, ReadVariableOp or resource), or None."""
    tensor = view.skip_identity(tensor)
    node = view.node(tensor)
    if node is None:
        return None
    if node.op == "Const":
        t = node.attr["value"].tensor
        dims = [d.size for d in t.tensor_shape.dim]
        if t.dtype in _TABLE_TYPES and len(dims) == 2:
            return Table(tensor, dims[0], dims[1])
        return None
    if node.op == "ReadVariableOp":
        tensor = view.skip_identity(node.input[0])
        node = view.node(tensor)
    spec = resources.get(node.name) if node is not None else None
    if spec is None:
        return None
    shape, dtype = spec
    if len(shape) != 2 or dtype not in ("float32", "bfloat16"):
        return None
    return Table(tensor, shape[0], shape[1])


def _row_gather(node, view, resources):
    """(table, indices tensor) of a plain row gather, else None."""
    if node.op == "GatherV2":
        if view.const_int(node.input[2]) != 0 or node.attr["batch_dims"].i != 0:
            return None
    elif node.op != "ResourceGather" or node.attr["batch_dims"].i != 0:
        return None
    table = resolve_table(view, node.input[0], resources)
    return None if table is None else (table, node.input[1])


def gather_rows(node, view, shapes, resources):
    """(table, indices tensor, nodes replaced besides `node`) of a row gather
    from one table or from a partitioned one, else None."""
    found = _row_gather(node, view, resources)
    if found is not None:
        return found + ([],)
    return _partitioned_gather(node, view, shapes, resources)


def _partition_outputs(view, tensors, k):
    """The DynamicPartition whose outputs 0..k-1 `tensors` are, in order, else None."""
    node = None
    for i, tensor in enumerate(tensors):
        producer = view.node(view.skip_identity(tensor).split(":")[0])
        if producer is None or producer.op != "DynamicPartition" or producer.attr["num_partitions"].i != k or \
                view.source(tensor) != (producer.name if i == 0 else f"{producer.name}:{i}") or \
                (node is not None and producer.name != node.name):
            return None
        node = producer
    return node


def _partitioned_gather(node, view, shapes, resources):
    if node.op != "Reshape":
        return None
    stitch = view.node(view.skip_identity(node.input[0]))
    if stitch is None or stitch.op not in _STITCHES or stitch.attr["N"].i < 2:
        return None
    k = stitch.attr["N"].i
    positions = _partition_outputs(view, stitch.input[:k], k)
    gathers = [view.node(view.skip_identity(t)) for t in stitch.input[k:2 * k]]
    found = [_row_gather(g, view, resources) if g is not None else None for g in gathers]
    if positions is None or any(f is None for f in found):
        return None
    local = _partition_outputs(view, [f[1] for f in found], k)
    if local is None or view.source(local.input[1]) != view.source(positions.input[1]):
        return None
    tables = [f[0] for f in found]
    if len({(t.dim, dtype_of(shapes, t.tensor)) for t in tables}) != 1:
        return None
    ids = _flattened_ids(view, positions.input[1])
    if ids is None or not _are_positions(view, shapes, positions.input[0], ids) or \
            not _reshapes_to_ids(view, shapes, node.input[1], ids, tables[0].dim):
        return None
    strategy = _strategy(view, shapes, ids, local.input[0], positions.input[1], [t.rows for t in tables])
    if strategy is None:
        return None
    table = Table(tables[0].tensor, sum(t.rows for t in tables), tables[0].dim, tuple(t.tensor for t in tables),
                  strategy)
    inner = [stitch.name, positions.name, local.name] + [g.name for g in gathers]
    return table, ids[0], inner


def _flattened_ids(view, assignment, depth=12):
    """(ids, flat) for the one Reshape(ids, [-1]) the shard assignment is computed from, else None."""
    found, seen, frontier = set(), set(), [view.source(assignment)]
    for _ in range(depth):
        nxt = []
        for tensor in frontier:
            node = view.node(tensor.split(":")[0])
            if node is None or tensor in seen or node.op == "Const":
                continue
            seen.add(tensor)
            shape = view.const_value(node.input[1]) if node.op == "Reshape" else None
            if shape is not None and list(np.ravel(shape)) == [-1]:
                found.add((view.source(node.input[0]), tensor))
            else:
                nxt.extend(view.source(i) for i in view.data_inputs(node))
        frontier = nxt
    return found.pop() if len(found) == 1 else None


def _are_positions(view, shapes, positions, ids):
    """True if `positions` is Range(size of the flat ids): where each id's row goes."""
    return _probed_by_shape(view, shapes, positions, ids[1], ids[0], [(0,), (1,), (7,)],
                            lambda shape: np.arange(int(np.prod(shape))))


def _reshapes_to_ids(view, shapes, shape_tensor, ids, dim):
    """True if `shape_tensor` is ids' shape + [dim] (the lookup's un-flattening)."""
    return _probed_by_shape(view, shapes, shape_tensor, ids[0], ids[0], [(5,), (3, 2), (0, 4)],
                            lambda shape: list(shape) + [dim])


def _probed_by_shape(view, shapes, tensor, fed, ids, trial_shapes, expect):
    """True if `tensor` is computed from `fed` alone and equals expect(shape)
    when `fed` has each trial shape. Where TensorFlow folded it to constants
    (ids of a static shape), it must equal expect(ids' static shape)."""
    found = probe.leaves(view, [tensor], stop=[fed])
    if found == []:
        static = shape_of(shapes, ids)
        if static is None or None in static:
            return False
        trial_shapes, inputs = [tuple(static)], []
    elif found == [fed]:
        inputs = [fed]
    else:
        return False
    dtype = _np_type(shapes, fed)
    results = probe.evaluate(view, [tensor], inputs, [[np.zeros(s, dtype)] if inputs else [] for s in trial_shapes])
    return all(r is not None and np.array_equal(r[0], expect(s)) for r, s in zip(results, trial_shapes))


def _np_type(shapes, tensor):
    return np.int32 if dtype_of(shapes, tensor) == types_pb2.DT_INT32 else np.int64


def _strategy_formulas(ids, rows):
    """(shard, row) of each id under "mod" and "div", as embedding_lookup computes them."""
    k, total = len(rows), sum(rows)
    per, extras = total // k, total % k
    div_shard = np.maximum(ids // (per + 1), (ids - extras) // per)
    div_row = np.where(div_shard < extras, ids % (per + 1), (ids - extras) % per)
    return {"mod": (ids % k, ids // k), "div": (div_shard, div_row)}


def _probe_ids(rows, dtype):
    """Every shard's first and last rows, and more: what separates mod from div."""
    total = sum(rows)
    edges = np.cumsum([0] + list(rows))
    picks = np.concatenate([np.arange(min(total, 64)), edges[:-1], edges[1:] - 1,
                            np.random.default_rng(0).integers(0, total, 64)])
    return np.unique(np.clip(picks, 0, total - 1)).astype(dtype)


def _strategy(view, shapes, ids, local, assignment, rows) -> Optional[str]:
    """"mod" or "div": the partition_strategy `assignment` and `local` compute from the flat ids."""
    flat = ids[1]
    if sum(rows) // len(rows) == 0 or \
            probe.leaves(view, [local, assignment], stop=[flat]) != [flat]:
        return None
    values = _probe_ids(rows, _np_type(shapes, flat))
    result = probe.evaluate(view, [assignment, local], [flat], [[values]])[0]
    if result is None:
        return None
    for name, (shard, row) in _strategy_formulas(values.astype(np.int64), rows).items():
        if np.array_equal(result[0], shard) and np.array_equal(result[1], row):
            return name
    return None
