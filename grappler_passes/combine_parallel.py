r"""Combines parallel dense layers on one input into one wider layer + split.

Multi-task towers, MMoE/PLE experts and multi-head projections apply several
dense layers to the same tensor. After fuse_dense each is its own
Recopt>FusedMLP; those whose first layers share an activation become

           x                               x
      /    |    \                          |
   MLP_1  MLP_2  MLP_3      ==>    FusedMLP(x, [W1|W2|W3])      one wider GEMM,
                                           |                     x read once
                                     SplitV(n1, n2, n3)
                                   /       |       \
                            rest of 1  rest of 2  rest of 3    (dropped if nothing is left)
"""
import numpy as np
from tensorflow.core.framework import types_pb2

from custom_ops.spec import mlp as mlp_spec
from grappler_passes.pass_base import GraphPass


def _int8_layers(node):
    return list(node.attr["int8_layers"].list.i) if "int8_layers" in node.attr else []


def _first_layer_key(node):
    return (node.attr["activations"].list.s[0], round(node.attr["alphas"].list.f[0], 7),
            node.attr["weights_bf16"].b, 0 in _int8_layers(node))


def _layers(node):
    return node.attr["num_layers"].i


class CombineParallelDense(GraphPass):
    name = "combine_parallel_dense"
    requires_custom_ops = True
    description = "parallel Recopt>FusedMLPs on one input -> one wider first layer + SplitV"

    def run(self, ctx, result):
        view = ctx.view
        groups = {}
        for node in view.nodes():
            if node.op == mlp_spec.OP_NAME and not view.has_control_inputs(node):
                groups.setdefault((node.input[0], _first_layer_key(node)), []).append(node)
        for (x, _), members in groups.items():
            if len(members) < 2:
                continue
            try:
                self._combine(view, x, members)
            except ValueError as exc:
                result.skip(members[0].name, str(exc))
                continue
            result.apply()

    @staticmethod
    def _combine(view, x, members):
        firsts = []
        for m in members:
            n = _layers(m)
            w, b = view.const_value(m.input[1]), view.const_value(m.input[1 + n])
            if w is None or b is None:
                raise ValueError(f"'{m.name}': first-layer weights are not constants")
            firsts.append((w, b))
        if len({w.shape[0] for w, _ in firsts}) != 1:
            raise ValueError("parallel layers disagree on the input width")
        base = members[0].name + "/recopt_combined"
        w_cat = view.add_const(base + "/w", np.concatenate([w for w, _ in firsts], axis=1)).name
        b_cat = view.add_const(base + "/b", np.concatenate([b for _, b in firsts])).name
        head = members[0]
        attrs = mlp_spec.op_attrs([head.attr["activations"].list.s[0]], [head.attr["alphas"].list.f[0]],
                                head.attr["weights_bf16"].b, [0] if 0 in _int8_layers(head) else [])
        combined = view.add_node(mlp_spec.OP_NAME, base, [x, w_cat, b_cat], attrs, device=head.device)
        sizes = view.add_const(base + "/sizes", np.array([w.shape[1] for w, _ in firsts], np.int32)).name
        axis = view.add_const(base + "/axis", np.array(-1, np.int32)).name
        split = view.add_node("SplitV", base + "/split", [combined.name, sizes, axis], {
            "T": types_pb2.DT_FLOAT,
            "Tlen": types_pb2.DT_INT32,
            "num_split": len(members),
        }, device=head.device)
        # By name: removing a node rebuilds the node list, so held NodeDefs go stale.
        for i, name in enumerate([m.name for m in members]):
            part = split.name if i == 0 else f"{split.name}:{i}"
            CombineParallelDense._drop_first_layer(view, view.node(name), part)

    @staticmethod
    def _drop_first_layer(view, node, new_input):
        n = _layers(node)
        if n == 1:
            view.replace_uses(node.name, new_input)
            view.remove_nodes([node.name])
            return
        weights, biases = list(node.input[2:1 + n]), list(node.input[2 + n:1 + 2 * n])
        del node.input[:]
        node.input.extend([new_input] + weights + biases)
        node.attr["num_layers"].i = n - 1
        acts, alphas = list(node.attr["activations"].list.s[1:]), list(node.attr["alphas"].list.f[1:])
        node.attr["activations"].list.ClearField("s")
        node.attr["activations"].list.s.extend(acts)
        node.attr["alphas"].list.ClearField("f")
        node.attr["alphas"].list.f.extend(alphas)
        if "int8_layers" in node.attr:
            shifted = [i - 1 for i in _int8_layers(node) if i > 0]
            node.attr["int8_layers"].list.ClearField("i")
            node.attr["int8_layers"].list.i.extend(shifted)
        view.touch()
