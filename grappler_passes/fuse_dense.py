r"""Fuses chains of dense layers (MatMul -> bias -> activation) into one
Recopt>FusedMLP op, so a whole MLP runs as one kernel call with pre-packed
weights instead of three ops per layer.

One layer, in any of the forms below (bias and activation optional, Add is
matched with the bias on either side, Identity between ops is looked through):

      x    W (Const, 2-D)
       \  /
      MatMul            transpose_b folded into W; transpose_a is not fused
        |    b (Const, [n] or [1, n])
  BiasAdd|Add|AddV2
        |
   Relu|Relu6|Elu|Selu|Sigmoid|Tanh|Softplus|LeakyRelu

Consecutive layers chain when a layer's output feeds only the next MatMul.
"""
import numpy as np
from tensorflow.core.framework import attr_value_pb2, types_pb2

from grappler_passes.pattern import P, match, safe_to_fuse
from grappler_passes.pass_base import GraphPass

ACTIVATIONS = {
    "Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "LeakyRelu": "leaky_relu",
}
FUSED_OP = "Recopt>FusedMLP"


def _is_float(node, view):
    return node.attr["T"].type == types_pb2.DT_FLOAT


def _const_rank(rank):
    def pred(node, view):
        shape = node.attr["value"].tensor.tensor_shape
        return node.attr["dtype"].type == types_pb2.DT_FLOAT and len(shape.dim) == rank
    return pred


_W = P("Const", "w", keep=True, pred=_const_rank(2))
_MATMUL = P("MatMul", "matmul", [None, _W],
            pred=lambda n, v: _is_float(n, v) and not n.attr["transpose_a"].b)
_BIAS = P("BiasAdd|Add|AddV2", "bias", [_MATMUL, P("Const", "b", keep=True)], pred=_is_float)
_ACT_OPS = "|".join(ACTIVATIONS)

# Longest first: at a given root the fullest form wins.
LAYER_PATTERNS = (
    P(_ACT_OPS, "act", [_BIAS], pred=_is_float),
    P(_ACT_OPS, "act", [_MATMUL], pred=_is_float),
    _BIAS,
    _MATMUL,
)


class _Layer:
    def __init__(self, m, view):
        self.match = m
        self.root = m.root
        self.x = view.skip_identity(view.data_inputs(m["matmul"])[0])
        w = view.const_value(m.tensors["w"])
        self.w = np.ascontiguousarray(w.T if m["matmul"].attr["transpose_b"].b else w)
        self.b = self._bias(m, view)
        act = m.nodes.get("act")
        self.activation = ACTIVATIONS[act.op] if act is not None else "linear"
        self.alpha = act.attr["alpha"].f if act is not None and act.op == "LeakyRelu" else 0.0

    def _bias(self, m, view):
        n = self.w.shape[1]
        if "b" not in m.nodes:
            return np.zeros([n], np.float32)
        b = view.const_value(m.tensors["b"])
        if b.shape not in ((n,), (1, n)):
            raise ValueError(f"bias of shape {list(b.shape)} does not broadcast as a [{n}] vector")
        return b.reshape([n]).astype(np.float32)


class FuseDense(GraphPass):
    name = "fuse_dense"
    requires_custom_ops = True
    description = "MatMul+bias+activation chains -> one Recopt>FusedMLP"

    def run(self, ctx, result):
        view = ctx.view
        layers = self._find_layers(view, result)
        for chain in self._chains(layers, view):
            self._emit(chain, view)
            result.apply()

    @staticmethod
    def _find_layers(view, result):
        """Maximal layer matches, keyed by root name, nodes used at most once."""
        used, layers = set(), {}
        for node in reversed(view.topological_order()):
            if node.name in used:
                continue
            for pattern in LAYER_PATTERNS:
                m = match(pattern, node, view)
                if m is None or any(n.name in used for n in m.removed):
                    continue
                reason = safe_to_fuse(m, view)
                if reason is None:
                    try:
                        layers[node.name] = _Layer(m, view)
                    except ValueError as exc:
                        reason = str(exc)
                if reason is not None:
                    result.skip(node.name, reason)
                    break
                used.update(n.name for n in m.removed)
                break
        return layers

    @staticmethod
    def _chains(layers, view):
        """Groups layers whose output feeds only the next layer's MatMul."""
        next_of = {}
        for layer in layers.values():
            prev = layers.get(layer.x)
            if prev is not None and prev.root.name not in view.protected and \
                    len(view.consumers(prev.root.name)) == 1 and not view.control_consumers(prev.root.name):
                next_of[prev.root.name] = layer
        heads = [l for l in layers.values() if l not in next_of.values()]
        for head in heads:
            chain = [head]
            while chain[-1].root.name in next_of:
                chain.append(next_of[chain[-1].root.name])
            yield chain

    @staticmethod
    def _emit(chain, view):
        last = chain[-1].root
        name, device = last.name, last.device
        weights = [view.add_const(f"{name}/recopt_w{i}", l.w.astype(np.float32)).name
                   for i, l in enumerate(chain)]
        biases = [view.add_const(f"{name}/recopt_b{i}", l.b).name for i, l in enumerate(chain)]
        view.remove_nodes({n.name for l in chain for n in l.match.removed})
        attrs = {
            "num_layers": attr_value_pb2.AttrValue(i=len(chain)),
            "activations": attr_value_pb2.AttrValue(
                list=attr_value_pb2.AttrValue.ListValue(s=[l.activation.encode() for l in chain])),
            "alphas": attr_value_pb2.AttrValue(
                list=attr_value_pb2.AttrValue.ListValue(f=[l.alpha for l in chain])),
        }
        # Same name as the replaced root: consumers keep reading `name:0`.
        view.add_node(FUSED_OP, name, [chain[0].x] + weights + biases, attrs, device=device)
