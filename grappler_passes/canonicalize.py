r"""Rewrites semantic variants of a dense layer into the canonical shape
both our fusers and TensorFlow's own remapper recognise:

  tensordot sandwich       Reshape(MatMul(Reshape(Transpose(x, id)), W), shape(x)[:-1]+[n])
                           -> BatchMatMulV2(x, W)        with custom ops (FusedMLP takes any rank)
  3-D dense                BatchMatMulV2(x, W) -> Reshape(MatMul(Reshape(x, [-1, k]), W), shape(x)[:-1]+[n])
                                                         stock ops only: TF's broadcasting
                                                         BatchMatMulV2 is ~3x slower than MatMul
  bias as Add               Add|AddV2(dense, b[n] | b[1, n]), either side   -> BiasAdd(dense, b)
  several biases            BiasAdd(BiasAdd(dense, b1), b2)                  -> BiasAdd(dense, b1 + b2)
  constant scale            Mul(dense [+ b], s), s scalar or [n]             -> dense with W*s [+ b*s]
                            (inference batch norm after constant folding is a scale then a bias)
  clipping                  Maximum(x, 0) -> Relu(x);  Minimum(Maximum(x, 0), 6) -> Relu6(x)

"dense" is MatMul / BatchMatMulV2 / dense Einsum with a constant 2-D weight.
With custom_ops=False this is what lets stock TensorFlow Serving fuse
MatMul+BiasAdd+Relu into _FusedMatMul at load time (its remapper matches
BiasAdd only, never Add).
"""
import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes.graph_view import add_strided_slice
from grappler_passes.dense_match import MATMUL, weight_transposed
from grappler_passes.pass_base import GraphPass
from grappler_passes.pattern import P, match

MAX_ROUNDS = 8


def _scalar_equals(value):
    def pred(node, view):
        return view.const_scalar(node.name) == value
    return pred


def _identity_perm(node, view):
    v = view.const_value(node.name)
    return v is not None and v.ndim == 1 and list(v) == list(range(v.size))


_X = P("*", "x", keep=True)
TENSORDOT = P("Reshape", "out", [
    P("MatMul", "mm", [P("Reshape", "in", [P("Transpose", "tr", [_X, P("Const", pred=_identity_perm, keep=True)])]),
                       P("Const", "w", keep=True)],
      pred=lambda n, v: not n.attr["transpose_a"].b and not n.attr["transpose_b"].b),
    P("ConcatV2", "shape", [P("GatherV2", "free", [P("Shape", "shape_of", [_X])]), P("Const", "n", keep=True)]),
])
_BIAS_CONST = P("Const", "b", keep=True)
ADD_BIAS = P("Add|AddV2", "add", [MATMUL, _BIAS_CONST])
# A second bias (or a batch norm's offset) after a BiasAdd: becomes a BiasAdd
# on the BiasAdd, which DOUBLE_BIAS then merges.
ADD_BIAS_AFTER_BIAS = P("Add|AddV2", "add", [P("BiasAdd", "inner", [MATMUL, P("Const", keep=True)]), _BIAS_CONST])
DOUBLE_BIAS = P("BiasAdd", "outer", [P("BiasAdd", "inner", [MATMUL, P("Const", "b1", keep=True)]),
                                     P("Const", "b2", keep=True)])
SCALE_BIASED = P("Mul", "mul", [P("BiasAdd", "bias", [MATMUL, P("Const", "b", keep=True)]), P("Const", "s", keep=True)])
SCALE = P("Mul", "mul", [MATMUL, P("Const", "s", keep=True)])
RELU = P("Maximum", "max", [P("*", "x", keep=True), P("Const", pred=_scalar_equals(0.0), keep=True)])
_SIX = P("Const", pred=_scalar_equals(6.0), keep=True)
RELU6 = P("Minimum", "min", [P("Maximum", "max", [P("*", "x", keep=True), P("Const", pred=_scalar_equals(0.0), keep=True)]),
                             _SIX])
RELU6_OF_RELU = P("Minimum", "min", [P("Relu", "max", [P("*", "x", keep=True)]), _SIX])  # the Maximum went first


def _n_out(m, view):
    w = view.const_value(m.tensors["w"])
    return w.shape[0] if weight_transposed(m["matmul"]) else w.shape[1]


def _only_used_by(view, node, consumer):
    return node.name not in view.protected and not view.control_consumers(node.name) and \
        all(c.name == consumer.name for c, _ in view.consumers(node.name))


def _drop_orphans(view, names):
    """Removes the named nodes once nothing uses them, then their inputs likewise:
    a dead consumer still counts as a use and would block the next rule.
    One removal at the end: each remove_nodes is a pass over the graph, and
    FiBiNET's thousands of orphans made this quadratic (39 s)."""
    stack, doomed = list(names), set()
    while stack:
        node = view.node(stack.pop())
        if node is None or node.name in doomed or node.name in view.protected or \
                any(c.name not in doomed for c, _ in view.consumers(node.name)) or \
                any(c.name not in doomed for c in view.control_consumers(node.name)):
            continue
        doomed.add(node.name)
        stack.extend(i.lstrip("^").split(":")[0] for i in node.input)
    view.remove_nodes(doomed)


def _set_const_input(view, node, index, name, value):
    node.input[index] = view.add_const(f"{name}/recopt_folded", np.asarray(value, np.float32)).name
    view.touch()


class Canonicalize(GraphPass):
    name = "canonicalize"
    description = "tensordot -> BatchMatMulV2, Add bias -> BiasAdd, fold biases/scales, Maximum/Minimum -> Relu/Relu6"

    def run(self, ctx, result):
        rules = ((self._tensordot,) if ctx.custom_ops else (self._bmm_to_matmul,)) + \
            (self._add_bias, self._double_bias, self._scale, self._clip)
        for _ in range(MAX_ROUNDS):
            changed = False
            for node in list(ctx.view.nodes()):
                if ctx.view.node(node.name) is not node or node.name in ctx.view.protected:
                    continue
                for rule in rules:
                    if rule(ctx.view, node):
                        result.apply()
                        changed = True
                        break
            if not changed:
                return

    @staticmethod
    def _tensordot(view, node):
        m = match(TENSORDOT, node, view)
        if m is None or view.const_value(m.tensors["n"]).shape != (1,):
            return False
        w = view.const_value(m.tensors["w"])
        if int(view.const_value(m.tensors["n"])[0]) != w.shape[1]:
            return False
        view.rewrite(node, "BatchMatMulV2", [m.tensors["x"], m.tensors["w"]],
                     {"T": m["mm"].attr["T"].type, "adj_x": False, "adj_y": False})
        _drop_orphans(view, [m["mm"].name, m["shape"].name])
        return True

    @staticmethod
    def _bmm_to_matmul(view, node):
        if node.op != "BatchMatMulV2":
            return False
        m = match(MATMUL, node, view)
        if m is None:
            return False
        w = view.const_value(m.tensors["w"])
        w = w.T if node.attr["adj_y"].b else w
        x, t, base, dev = node.input[0], node.attr["T"].type, node.name, node.device
        i32 = types_pb2.DT_INT32
        shape = view.add_node("Shape", base + "/recopt_shape", [x], {"T": t, "out_type": i32}, dev).name
        const = lambda n, v: view.add_const(f"{base}/recopt_{n}", np.asarray(v, np.int32)).name  # noqa: E731
        lead = add_strided_slice(view, base + "/recopt_lead", shape, types_pb2.DT_INT32, [0], [-1], device=dev).name
        out_shape = view.add_node("ConcatV2", base + "/recopt_out_shape", [lead, const("n", [w.shape[1]]),
                                                                           const("axis", 0)],
                                  {"T": i32, "Tidx": i32, "N": 2}, dev).name
        flat = view.add_node("Reshape", base + "/recopt_flat", [x, const("flat", [-1, w.shape[0]])],
                             {"T": t, "Tshape": i32}, dev).name
        w_name = view.add_const(base + "/recopt_w", w.astype(np.float32)).name
        mm = view.add_node("MatMul", base + "/recopt_matmul", [flat, w_name],
                           {"T": t, "transpose_a": False, "transpose_b": False}, dev).name
        view.rewrite(node, "Reshape", [mm, out_shape], {"T": t, "Tshape": i32})
        return True

    @staticmethod
    def _add_bias(view, node):
        m = match(ADD_BIAS, node, view) or match(ADD_BIAS_AFTER_BIAS, node, view)
        if m is None or node.attr["T"].type != types_pb2.DT_FLOAT:
            return False
        n = _n_out(m, view)
        b = view.const_value(m.tensors["b"])
        if b.shape not in ((n,), (1, n)):
            return False
        view.rewrite(node, "BiasAdd", [m.nodes.get("inner", m["matmul"]).name, m.tensors["b"]],
                     {"T": node.attr["T"].type, "data_format": "NHWC"})
        if b.ndim == 2:
            _set_const_input(view, node, 1, node.name, b.reshape(n))
        return True

    @staticmethod
    def _double_bias(view, node):
        m = match(DOUBLE_BIAS, node, view)
        if m is None or not _only_used_by(view, m["inner"], node):
            return False
        total = view.const_value(m.tensors["b1"]) + view.const_value(m.tensors["b2"])
        node.input[0] = m["matmul"].name
        _set_const_input(view, node, 1, node.name, total)
        _drop_orphans(view, [m["inner"].name])
        return True

    @staticmethod
    def _scale(view, node):
        for pattern in (SCALE_BIASED, SCALE):
            m = match(pattern, node, view)
            if m is not None:
                break
        else:
            return False
        mm = m["matmul"]
        s = view.const_value(m.tensors["s"])
        n = _n_out(m, view)
        if s.size not in (1, n) or (s.size == n and s.shape[-1] != n) or s.ndim > 2:
            return False
        head = m.nodes.get("bias", mm)
        if not _only_used_by(view, head, node) or (head is not mm and not _only_used_by(view, mm, head)):
            return False
        s = s.reshape(-1).astype(np.float32)
        w = view.const_value(m.tensors["w"])
        scaled = w * (s[:, None] if weight_transposed(mm) and s.size > 1 else s)
        _set_const_input(view, mm, 1, mm.name, scaled)
        if head is not mm:
            _set_const_input(view, head, 1, head.name, view.const_value(m.tensors["b"]) * s)
        view.replace_uses(node.name, head.name)
        view.remove_nodes([node.name])
        return True

    @staticmethod
    def _clip(view, node):
        for pattern, op in ((RELU6, "Relu6"), (RELU6_OF_RELU, "Relu6"), (RELU, "Relu")):
            m = match(pattern, node, view)
            if m is None:
                continue
            if op == "Relu6" and not _only_used_by(view, m["max"], node):
                continue
            view.rewrite(node, op, [m.tensors["x"]], {"T": node.attr["T"].type})
            _drop_orphans(view, [m["max"].name] if op == "Relu6" else [])
            return True
        return False
