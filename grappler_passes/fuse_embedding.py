r"""Fuses a graph's embedding lookups (see embedding_match and embedding_ragged for the forms
recognised) into Recopt>FusedEmbeddingLookup ops:

  ConcatV2(l1, l2, x, l3, axis=-1)  ->  ConcatV2(Fused[concat](l1, l2), x, l3)
      a run of >= 2 adjacent [batch, width] lookups used only by the concat
      becomes one op writing the concatenated block (the whole concat when
      every input is a lookup);
  Pack(x, l1, ..., ln, axis=1)      ->  ConcatV2(ExpandDims(x, 1), Reshape(Fused[concat], [-1, n, d]))
      the DLRM stack, for a run of lookups of one width d;
  everything else                   ->  one Fused op with an output per lookup.

Under precision="bf16" the op reads bfloat16 copies of the tables
(embedding_storage.py).

A lookup whose ids depend on another lookup's output is left alone (one op
for both would be a cycle). Replaced nodes are left dead for prune_dead_nodes.
"""
import dataclasses

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from custom_ops.spec.embedding import OP_NAME, op_attrs
from grappler_passes import embedding_match, embedding_sparse
from grappler_passes.embedding_ragged import match_ragged
from grappler_passes.embedding_storage import TableStorage
from grappler_passes.pass_base import GraphPass
from grappler_passes.shapes import dtype_of, shape_of

# A ragged mean's RealDiv root before the UnsortedSegmentSum inside it.
MATCHERS = (match_ragged,) + embedding_sparse.MATCHERS + embedding_match.MATCHERS

_FLOAT = types_pb2.DT_FLOAT


class FuseEmbedding(GraphPass):
    name = "fuse_embedding"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "embedding lookups (gather, pooled, sparse, hashed) -> Recopt>FusedEmbeddingLookup"

    def run(self, ctx, result):
        view = ctx.view
        self.storage = TableStorage(ctx)
        info = view.tensor_info()
        lookups = self._find(view, info, ctx.resources, result)
        if not lookups:
            return
        done = set()
        for node in list(view.nodes()):
            if node.op == "ConcatV2":
                self._fuse_concat(node, lookups, done, view, info, result)
            elif node.op == "Pack":
                self._fuse_stack(node, lookups, done, view, info, result)
        rest = [l for name, l in lookups.items() if name not in done]
        if len(rest) >= 2 or (rest and _absorbs_more(rest[0])):
            self._emit_separate(rest, view, info)
            result.apply()

    # ---- finding -----------------------------------------------------
    @staticmethod
    def _find(view, info, resources, result):
        lookups, inner = {}, set()
        for node in reversed(view.topological_order()):
            if node.name in inner or node.name in view.protected:
                continue
            for matcher in MATCHERS:
                found = matcher(node, view, info, resources)
                if found is not None:
                    lookups[node.name] = found
                    inner.update(view.skip_identity(i).split(":")[0] for i in node.input)
                    inner.update(found.inner)
                    break
        for name in inner:
            lookups.pop(name, None)  # a gather absorbed by its pooling
        return _independent(lookups, view, result)

    # ---- consumers -----------------------------------------------------
    def _run_candidates(self, node, n_inputs, lookups, done, view):
        """Per input of `node`: its Lookup if only `node` uses it, else None."""
        out = []
        for tensor in view.data_inputs(node)[:n_inputs]:
            name, _, port = tensor.partition(":")
            l = lookups.get(name)
            ok = (l is not None and l.rank2 and port in ("", "0") and name not in done and
                  [c.name for c, _ in view.consumers(name)] == [node.name])
            out.append(l if ok else None)
        return out

    @staticmethod
    def _runs(items, same_width=False):
        """(start, end) of maximal runs of >= 2 adjacent lookups."""
        runs, start = [], None
        for i, item in enumerate(items + [None]):
            breaks = item is None or (same_width and start is not None and item.table.dim != items[start].table.dim)
            if breaks and start is not None:
                if i - start >= 2:
                    runs.append((start, i))
                start = None
            if item is not None and start is None:
                start = i
        return runs

    def _fuse_concat(self, node, lookups, done, view, info, result):
        n = node.attr["N"].i
        axis = view.const_value(node.input[n])
        items = self._run_candidates(node, n, lookups, done, view)
        if axis is None or int(axis) not in (1, -1) or node.attr["T"].type != types_pb2.DT_FLOAT or \
                _concat_rank(info, node, items) != 2:
            return
        runs = self._runs(items)
        if not runs:
            return
        if runs == [(0, n)] and node.name not in view.protected:
            name, device = node.name, node.device
            view.remove_nodes({name})
            self._emit(items, view, info, name, device, concat=True)
        else:
            inputs = list(node.input)
            for start, end in reversed(runs):
                fused = self._emit(items[start:end], view, info, f"{node.name}/recopt_embedding",
                                   node.device, concat=True)
                inputs[start:end] = [fused.name]
            data = [i for i in inputs if not i.startswith("^")]
            if len(data) == 2:  # one fused input and the axis: ConcatV2 needs N >= 2
                view.rewrite(node, "Identity", data[:1], {"T": _FLOAT})
            else:
                del node.input[:]
                node.input.extend(inputs)
                node.attr["N"].i = n - sum(e - s - 1 for s, e in runs)
                view.touch()
        done.update(l.root.name for s, e in runs for l in items[s:e])
        result.apply()

    def _fuse_stack(self, node, lookups, done, view, info, result):
        n = node.attr["N"].i
        if node.attr["axis"].i not in (1, -2) or node.attr["T"].type != types_pb2.DT_FLOAT or \
                node.name in view.protected:
            return
        items = self._run_candidates(node, n, lookups, done, view)
        runs = self._runs(items, same_width=True)
        if not runs:
            return
        name, device, inputs = node.name, node.device, list(view.data_inputs(node))
        view.remove_nodes({name})
        parts, i = [], 0
        one = view.add_const(f"{name}/recopt_axis", np.array(1, np.int32)).name
        for start, end in runs:
            parts += [self._expand(view, inputs[j], one, name, device) for j in range(i, start)]
            fused = self._emit(items[start:end], view, info, f"{name}/recopt_embedding", device, concat=True)
            shape = view.add_const(f"{name}/recopt_shape", np.array([-1, end - start, items[start].table.dim],
                                                                      np.int32)).name
            parts.append(view.add_node("Reshape", f"{name}/recopt_reshape", [fused.name, shape],
                                       {"T": _FLOAT, "Tshape": types_pb2.DT_INT32},
                                       device).name)
            i = end
        parts += [self._expand(view, inputs[j], one, name, device) for j in range(i, n)]
        if len(parts) == 1:  # the whole stack was one run: ConcatV2 needs N >= 2
            view.add_node("Identity", name, parts, {"T": _FLOAT}, device)
        else:
            view.add_node("ConcatV2", name, parts + [one], {"T": _FLOAT, "N": len(parts), "Tidx": types_pb2.DT_INT32},
                          device)
        done.update(l.root.name for s, e in runs for l in items[s:e])
        result.apply()

    @staticmethod
    def _expand(view, tensor, axis, name, device):
        return view.add_node("ExpandDims", f"{name}/recopt_expand", [tensor, axis], {
            "T": _FLOAT, "Tdim": types_pb2.DT_INT32}, device).name

    def _emit_separate(self, lookups, view, info):
        fused = self._emit(lookups, view, info, "recopt_embedding", lookups[0].root.device, concat=False)
        for i, l in enumerate(lookups):
            view.replace_uses(l.root.name, f"{fused.name}:{i}")

    # ---- the fused node -------------------------------------------------
    def _emit(self, lookups, view, info, name, device, concat):
        tables, features = {}, []
        for l in lookups:
            index = tables.setdefault(l.table.key, (len(tables), l.table))[0]
            features.append(dataclasses.replace(l.feature, table=index))
        ordered = [t for _, t in sorted(tables.values(), key=lambda it: it[0])]
        inputs, table_types = zip(*[self.storage.input_for(tensor, info) for t in ordered for tensor in t.inputs])
        ids = [l.ids for l in lookups]
        parts = [embedding_match.tensor_of(view, p) for l in lookups for p in l.parts]
        part_types = [p.dtype if isinstance(p, embedding_match.PlannedTensor) else dtype_of(info, p)
                      for l in lookups for p in l.parts]
        weights = [l.weights for l in lookups if l.feature.weighted]
        sharded = any(t.shards for t in ordered)
        attrs = op_attrs(features, [t.dim for t in ordered], concat,
                         [len(t.inputs) for t in ordered] if sharded else (),
                         [t.partitioning for t in ordered] if sharded else ())
        # Type lists as tf.DTypes: an int enum list would read as list(int)
        # when the op library is not loaded in this process.
        attrs.update(num_weights=len(weights), Ttables=_dtypes(table_types),
                     Tids=_dtypes(dtype_of(info, i) for i in ids), Tpartitions=_dtypes(part_types))
        fused = view.add_node(OP_NAME, name, list(inputs) + ids + parts + weights, attrs, device)
        replaced = {n for l in lookups for n in [l.root.name] + l.inner}
        _move_control_edges(view, replaced | _table_reads(view, ordered, replaced), fused.name)
        return fused


def _concat_rank(info, node, items):
    """The concat's rank: inferred, or 2 when one of its inputs is a
    [batch, width] lookup (a gather from a variable table has no static shape
    in a converted signature: the handle's shape data is lost)."""
    shape = shape_of(info, node.name)
    if shape is not None:
        return len(shape)
    return 2 if any(item is not None for item in items) else None


def _dtypes(enums):
    return [tf.as_dtype(e) for e in enums]


def _move_control_edges(view, replaced, fused):
    """`^replaced` control inputs (tf_keras orders stateful reads this way)
    now wait for the fused op instead."""
    for node in view.nodes():
        if any(i.startswith("^") and i[1:] in replaced for i in node.input):
            inputs = [i for i in node.input if not (i.startswith("^") and i[1:] in replaced)]
            if f"^{fused}" not in inputs and node.name != fused:
                inputs.append(f"^{fused}")
            del node.input[:]
            node.input.extend(inputs)
    view.touch()


def _table_reads(view, tables, replaced):
    """ReadVariableOps of the fused tables that only replaced nodes read.
    Keras orders its outputs after every variable read (control edges from
    them): those edges now wait for the fused op, which reads the table
    itself, so the read goes and, under precision="bf16", so does the fp32
    table from the saved model."""
    reads, frontier = set(), [view.skip_identity(t).split(":")[0] for table in tables for t in table.inputs]
    while frontier:
        for consumer, _ in view.consumers(frontier.pop()):
            if consumer.op == "Identity":
                frontier.append(consumer.name)
            elif consumer.op == "ReadVariableOp" and \
                    all(c.name in replaced for c, _ in view.consumers(consumer.name)):
                reads.add(consumer.name)
    return reads


def _absorbs_more(lookup):
    """A lone lookup is worth an op when it folds more than its gather."""
    f = lookup.feature
    return f.combiner != "none" or f.hash_buckets or f.negative_ids == "wrap"


def _independent(lookups, view, result):
    """Drops lookups whose ids are computed from another lookup's output."""
    roots = set(lookups)
    kept = {}
    for name, l in lookups.items():
        seen, frontier = set(), [t.split(":")[0].lstrip("^") for t in l.ids_sources]
        while frontier:
            node = frontier.pop()
            if node in seen:
                continue
            seen.add(node)
            producer = view.node(node)
            if producer is not None:
                frontier.extend(i.split(":")[0].lstrip("^") for i in producer.input)
        if seen & roots:
            result.skip(name, "its ids depend on another embedding lookup")
        else:
            kept[name] = l
    return kept
