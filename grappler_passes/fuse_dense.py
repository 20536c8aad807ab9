r"""Fuses chains of dense layers into one Recopt>FusedMLP op, so a whole MLP
runs as one kernel call with weights packed once.

One layer, in any of these forms (Identity between ops is looked through):

      x    W (Const, 2-D)
       \  /
   MatMul | BatchMatMulV2 | Einsum "...k,kn->...n"    transposed W folded in; MatMul's
                                                      transpose_a becomes a Transpose of x
        |    b (Const, [n] or [1, n])
  BiasAdd | Add | AddV2                               bias on either side, optional
        |
   activation                                         optional; any spelling
                                                      activation_match recognises

Consecutive layers chain when a layer's output feeds only the next layer.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from custom_ops.spec import mlp as mlp_spec
from grappler_passes.activation_match import find_activation
from grappler_passes.dense_match import MATMUL, is_float, weight_transposed
from grappler_passes.pass_base import GraphPass
from grappler_passes.pattern import P, match, safe_to_fuse

FUSED_OP = spec.FUSED_MLP


# Under precision="int8", a layer multiplies in int8 when both its input and
# output are at least this wide. A narrow layer (the logit head: n = 1)
# costs little to run in fp32 and carries the answer users compare.
INT8_MIN_WIDTH = 16


def int8_worthy(k, n):
    return min(k, n) >= INT8_MIN_WIDTH


_BIAS = P("BiasAdd|Add|AddV2", "bias", [MATMUL, P("Const", "b", keep=True)], pred=is_float)
PRE_PATTERNS = (_BIAS, MATMUL)  # longest first


class _Layer:
    def __init__(self, m, view):
        self.removed = list(m.removed)
        self.root = m.root
        self.out = m.root.name
        self.x = view.skip_identity(view.data_inputs(m["matmul"])[0])
        self.transpose_x = m["matmul"].op == "MatMul" and m["matmul"].attr["transpose_a"].b
        w = view.const_value(m.tensors["w"])
        self.w = np.ascontiguousarray(w.T if weight_transposed(m["matmul"]) else w).astype(np.float32)
        self.b = self._bias(m, view)
        self.activation, self.alpha = "linear", 0.0

    def _bias(self, m, view):
        n = self.w.shape[1]
        if "b" not in m.nodes:
            return np.zeros([n], np.float32)
        b = view.const_value(m.tensors["b"])
        if b.shape not in ((n,), (1, n)):
            raise ValueError(f"bias of shape {list(b.shape)} does not broadcast as a [{n}] vector")
        return b.reshape([n]).astype(np.float32)

    def absorb_activation(self, view):
        found = find_activation(view, self.root.name)
        if found is None:
            return
        self.activation, self.alpha, out, region = found
        self.removed += region
        self.root = view.node(out)
        self.out = out


class FuseDense(GraphPass):
    name = "fuse_dense"
    requires_custom_ops = True
    description = "MatMul+bias+activation chains -> one Recopt>FusedMLP"

    def run(self, ctx, result):
        view = ctx.view
        layers = self._find_layers(view, result)
        precision = ctx.precision("dense")
        for chain in self._chains(layers, view):
            self._emit(chain, view, precision == "bf16", precision == "int8")
            result.apply()

    @staticmethod
    def _find_layers(view, result):
        """Maximal layers keyed by their output tensor; nodes used at most once."""
        used, layers = set(), {}
        for node in reversed(view.topological_order()):
            if node.name in used:
                continue
            for pattern in PRE_PATTERNS:
                m = match(pattern, node, view)
                if m is None or any(n.name in used for n in m.removed):
                    continue
                reason = safe_to_fuse(m, view)
                layer = None
                if reason is None:
                    try:
                        layer = _Layer(m, view)
                    except ValueError as exc:
                        reason = str(exc)
                if reason is not None:
                    result.skip(node.name, reason)
                    break
                layer.absorb_activation(view)
                if any(n.name in used for n in layer.removed):
                    break
                used.update(n.name for n in layer.removed)
                layers[layer.out] = layer
                break
        return layers

    @staticmethod
    def _chains(layers, view):
        """Groups layers whose output feeds only the next layer's matmul."""
        next_of = {}
        for layer in layers.values():
            prev = layers.get(layer.x)
            if prev is not None and not layer.transpose_x and prev.root.name not in view.protected and \
                    len(view.consumers(prev.root.name)) == 1 and not view.control_consumers(prev.root.name):
                next_of[prev.out] = layer
        chained = {id(l) for l in next_of.values()}
        for head in (l for l in layers.values() if id(l) not in chained):
            chain = [head]
            while chain[-1].out in next_of:
                chain.append(next_of[chain[-1].out])
            yield chain

    @staticmethod
    def _emit(chain, view, bf16=False, int8=False):
        last = chain[-1].root
        name, device = last.name, last.device
        weights = [view.add_const(f"{name}/recopt_w{i}", l.w).name for i, l in enumerate(chain)]
        biases = [view.add_const(f"{name}/recopt_b{i}", l.b).name for i, l in enumerate(chain)]
        view.remove_nodes({n.name for l in chain for n in l.removed})
        int8_layers = [i for i, l in enumerate(chain) if int8 and int8_worthy(*l.w.shape)]
        attrs = mlp_spec.op_attrs([l.activation for l in chain], [l.alpha for l in chain], bf16, int8_layers)
        x = chain[0].x
        if chain[0].transpose_x:
            perm = view.add_const(f"{name}/recopt_perm", np.array([1, 0], np.int32)).name
            x = view.add_node("Transpose", f"{name}/recopt_transpose_x", [x, perm], {
                "T": types_pb2.DT_FLOAT,
                "Tperm": types_pb2.DT_INT32}, device=device).name
        # Same name as the replaced output node: consumers keep reading `name:0`.
        view.add_node(FUSED_OP, name, [x] + weights + biases, attrs, device=device)
