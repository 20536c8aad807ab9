"""A dense layer's product, in every spelling fuse_dense and canonicalize
accept: MatMul (transpose_b folded; transpose_a handled by the emitter),
BatchMatMulV2 without adj_x, and Einsum "...k,kn->...n" (or "...k,nk->...n"),
each with a float 2-D Const weight."""
import re

from tensorflow.core.framework import types_pb2

from grappler_passes.pattern import P

_EINSUM = re.compile(r"^([a-z.]*)([a-z]),([a-z])([a-z])->([a-z.]*)([a-z])$")


def is_float(node, view):
    return node.attr["T"].type == types_pb2.DT_FLOAT


def _const_rank(rank):
    def pred(node, view):
        shape = node.attr["value"].tensor.tensor_shape
        return node.attr["dtype"].type == types_pb2.DT_FLOAT and len(shape.dim) == rank
    return pred


def _einsum_transpose(node):
    """None if not a dense einsum; else whether W is written [n, k]."""
    eq = node.attr["equation"].s.decode().replace(" ", "")
    m = _EINSUM.match(eq)
    if not m or len(node.input) < 2:
        return None
    batch, k, w0, w1, out_batch, n = m.groups()
    if batch != out_batch or k in batch:
        return None
    if (w0, w1) == (k, n):
        return False
    if (w0, w1) == (n, k):
        return True
    return None


def _dense_matmul(node, view):
    if not is_float(node, view):
        return False
    if node.op == "MatMul":
        return True  # transpose_a: the fused op gets a Transpose in front (fuse_dense._emit)
    if node.op == "BatchMatMulV2":
        return not node.attr["adj_x"].b
    return node.op == "Einsum" and _einsum_transpose(node) is not None


def weight_transposed(node):
    if node.op == "MatMul":
        return node.attr["transpose_b"].b
    if node.op == "BatchMatMulV2":
        return node.attr["adj_y"].b
    return _einsum_transpose(node)


_W = P("Const", "w", keep=True, pred=_const_rank(2))
MATMUL = P("MatMul|BatchMatMulV2|Einsum", "matmul", [None, _W], pred=_dense_matmul)
