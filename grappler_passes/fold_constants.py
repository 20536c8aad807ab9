"""Folds weight-only subgraphs (transposes, casts, reshapes of constants).

Once small variables are frozen, a model's weights often reach their
consumer through Transpose/Cast/Reshape/Mul chains that stock TensorFlow
recomputes on every call (Grappler's folding skips large tensors). This
pass evaluates each such chain once, with TensorFlow itself, and stores the
result as a Const under the original node's name, so consumers are
untouched and fusers see plain constants.
"""
import tensorflow as tf
from tensorflow.core.framework import graph_pb2
from tensorflow.python.framework import tensor_util

from grappler_passes.attrs import set_attrs
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import GraphPass
from grappler_passes.sessions import evaluation_session

# Single-output, stateless ops whose output is no larger than their inputs
# (Fill/Tile/BroadcastTo would bloat the GraphDef, so they are not here).
FOLDABLE = frozenset({
    "Identity", "Snapshot", "Transpose", "Cast", "Reshape", "ExpandDims", "Squeeze", "ConcatV2",
    "Pack", "Mul", "Add", "AddV2", "Sub", "RealDiv", "Neg", "Sqrt", "Rsqrt", "Square",
    "StridedSlice", "Slice", "GatherV2", "MatMul", "BatchMatMulV2", "Relu", "Sigmoid", "Tanh",
    "Exp", "Log", "Maximum", "Minimum", "Shape", "Reciprocal", "Conj", "Einsum",
})


class FoldConstants(GraphPass):
    name = "fold_constants"
    description = "evaluate weight-only subgraphs once and store them as Const"

    def run(self, ctx, result):
        view = ctx.view
        foldable = self._foldable(view)
        fold_set = set(foldable)
        frontier = [name for name in foldable if self._is_frontier(name, fold_set, view)]
        if not frontier:
            return
        values = self._evaluate(view, foldable, frontier)
        for name, value in zip(frontier, values):
            node = view.node(name)
            proto = tensor_util.make_tensor_proto(value)
            node.op = "Const"
            del node.input[:]
            node.attr.clear()
            set_attrs(node, {"value": proto, "dtype": proto.dtype})
            result.apply()
        view.touch()

    @staticmethod
    def _foldable(view):
        """Names of non-Const nodes computable from Consts alone, in topological order."""
        consts, found = set(), []
        for node in view.topological_order():
            if node.op == "Const":
                consts.add(node.name)
                continue
            if node.op not in FOLDABLE or view.has_control_inputs(node) or node.name in view.protected:
                continue
            inputs = view.data_inputs(node)
            if inputs and all(parse_input(i)[0] in consts and parse_input(i)[1] == 0 for i in inputs):
                consts.add(node.name)
                found.append(node.name)
        return found

    @staticmethod
    def _is_frontier(name, fold_set, view):
        return any(c.name not in fold_set for c, _ in view.consumers(name)) or view.control_consumers(name)

    @staticmethod
    def _evaluate(view, foldable, frontier):
        needed, stack = {}, list(frontier)
        while stack:
            node = view.node(stack.pop())
            if node.name in needed:
                continue
            needed[node.name] = node
            stack.extend(parse_input(i)[0] for i in node.input)
        sub = graph_pb2.GraphDef(node=list(needed.values()))
        sub.library.CopyFrom(view.graph_def.library)
        graph = tf.Graph()
        with graph.as_default():
            tf.graph_util.import_graph_def(sub, name="")
        with evaluation_session(graph, threads=0) as sess:
            return sess.run([f"{n}:0" for n in frontier])
