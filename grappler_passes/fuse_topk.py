r"""Top-k rewrites for retrieval.

1. Score + top-k -> Recopt>ScoreTopK (all n scores are never written out):

     q [B, d]   C                      C: a Const, or a ReadVariableOp of a captured
        \      /                          variable; [n, d] (transpose_b, adj_y, a
   MatMul | BatchMatMulV2 | Einsum        Transpose(C, [1, 0]) or "bd,nd->bn") or [d, n]
        |
   Mul (scalar Const)                  optional, either side
        |
   BiasAdd | Add | AddV2 (Const [n])   optional, either side
        |
      TopKV2 (k)   -> values, indices  (Gathers of ids by indices stay as they are)

   The candidate matrix is re-encoded once, here, in the storage that
   options.precision asks for (fp32, bf16, or int8 with per-row scales) and,
   for the CPU, in the "blocks16" layout (16 candidates' elements
   interleaved: custom_ops.spec.retrieval.to_blocks), which scores without
   horizontal sums. An fp32 [n, d] matrix that something else also reads
   is used in place as rows instead of being stored twice. int8 and bf16
   (not *_approx) become Recopt>ExactScoreTopK instead: the same scan, then
   fp32 rescoring of every candidate the rounding bound cannot rule out, so
   the answer is the fp32 scan's; it reads the fp32 [n, d] rows in place
   where the graph has them, else from a copy. Candidates from
   a variable get a derived variable (made once per optimize() call), so a
   multi-GiB matrix never becomes a GraphDef constant.

2. Any other TopKV2 whose last axis may be long -> Recopt>TopK (same results),
   and sorted ones over short rows (a static last axis of at most 64:
   DeepCTR's KMaxPooling) with a constant k >= 2, which the op ranks by
   counting instead of TopKV2's heap (same results; a row with a NaN takes
   TopKV2's algorithm).

For options.device == "gpu" both rewrites also need what the GPU kernels take
(custom_ops/gpu/gpu_core.h): a constant k <= 4096, float32 rows for TopK, and
d <= 1536 for ScoreTopK; anything else stays a TopKV2 that TensorFlow's own
GPU kernel runs.
"""
import re

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from custom_ops.spec import retrieval
from grappler_passes import shapes
from grappler_passes.pass_base import EXACT_RETRIEVAL, GraphPass, SkipMatch
from grappler_passes.pattern import P, require, require_safe

# Rows shorter than this gain nothing from Recopt>TopK (core/topk.h
# kTopKSampledMinCols; bench/topk.py measures the crossover) ...
MIN_TOPK_COLS = 16384
# ... except sorted rows at most this long (kernels/topk_plain.h kShortRowMaxCols).
MAX_SHORT_COLS = 64
_TOPK_TYPES = {types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE, types_pb2.DT_INT32, types_pb2.DT_INT64}
_EINSUM = re.compile(r"^([a-z])([a-z]),([a-z])([a-z])->([a-z])([a-z])$")
_TCAND = {"fp32": types_pb2.DT_FLOAT, "bf16": types_pb2.DT_BFLOAT16, "int8": types_pb2.DT_INT8}
# custom_ops/gpu/gpu_core.h kMaxK and kMaxScoreDim.
GPU_MAX_K = 4096
GPU_MAX_DIM = 1536


class FuseTopK(GraphPass):
    name = "fuse_topk"
    requires_custom_ops = True
    description = "matmul (+scale, +bias) + TopKV2 -> Recopt>ScoreTopK; long TopKV2 -> Recopt>TopK"

    def run(self, ctx, result):
        view = ctx.view
        topks = [n for n in view.nodes() if n.op == "TopKV2"]
        if not topks:
            return  # spares the shape-inference import of the whole graph
        info = view.tensor_info()
        # OptimizeOptions.precision (validated there) names the candidate storage too.
        precision = ctx.precision("retrieval")
        gpu = getattr(ctx.options, "device", "cpu") == "gpu"
        for node in topks:
            if not _int32_k_and_indices(node):
                result.skip(node.name, "k or indices are not int32 (the fused ops return int32 indices)")
                continue
            gpu_reason = _gpu_limits(view, node) if gpu else None
            if gpu_reason:
                result.skip(node.name, gpu_reason)
                continue
            try:
                chain = _ScoreChain(view, ctx, info, node)
                if gpu and chain.dim is not None and chain.dim > GPU_MAX_DIM:
                    raise SkipMatch(f"d={chain.dim} is above the GPU kernel's {GPU_MAX_DIM}")
                _emit_score_topk(ctx, node, chain, precision, gpu)
                result.apply()
                continue
            except SkipMatch as why:
                reason = str(why)
            if gpu and node.attr["T"].type != types_pb2.DT_FLOAT:
                result.skip(node.name, f"{reason}; Recopt>TopK has a GPU kernel for float32 only")
            elif (_long_rows(info, node) or _short_sorted_rows(view, info, node)) and \
                    node.attr["T"].type in _TOPK_TYPES:
                node.op = spec.TOPK
                for attr in ("Tk", "index_type"):  # TopKV2's, always int32 here
                    node.attr.pop(attr, None)
                view.touch()
                result.apply()
            else:
                result.skip(node.name, f"{reason}; last axis under {MIN_TOPK_COLS} and not a sorted row of at most "
                                       f"{MAX_SHORT_COLS}")


def _int32_k_and_indices(node):
    return all(attr not in node.attr or node.attr[attr].type == types_pb2.DT_INT32
               for attr in ("Tk", "index_type"))


def _gpu_limits(view, node):
    """Why the GPU kernels cannot take this TopKV2, or None."""
    k = view.const_value(node.input[1])
    if k is None:
        return f"k is not a constant, so the GPU limit k <= {GPU_MAX_K} cannot be checked"
    if int(k) > GPU_MAX_K:
        return f"k={int(k)} is above the GPU kernels' {GPU_MAX_K}"
    return None


def _long_rows(info, node):
    shape = shapes.shape_of(info, node.input[0])
    return shape is None or shape[-1] is None or shape[-1] >= MIN_TOPK_COLS


def _short_sorted_rows(view, info, node):
    """Sorted, k >= 2 (k = 1 measured faster as TopKV2's max), rows of at most MAX_SHORT_COLS."""
    shape = shapes.shape_of(info, node.input[0])
    k = view.const_int(node.input[1])
    return node.attr["sorted"].b and k is not None and k >= 2 and shape is not None and shape[-1] is not None \
        and shape[-1] <= MAX_SHORT_COLS


def _product_check(node, view):
    # `in` first: indexing a missing attr would add it, and matchers only read.
    if any(a in node.attr and node.attr[a].b for a in ("transpose_a", "adj_x")):
        return f"'{node.name}' transposes its queries"
    if node.attr["T"].type != types_pb2.DT_FLOAT:
        return f"'{node.name}' is not float32"
    return None


def _scalar_check(node, view):
    size = view.const_value(node.name).size
    return None if size == 1 else f"'{node.name}' scales by {size} values, not a scalar"


def _bias_check(node, view):
    value = view.const_value(node.name)
    if value.size < 2 or value.shape[-1] != value.size:
        return f"'{node.name}' of shape {list(value.shape)} is not a per-candidate bias"
    return None


# TopKV2 <- [bias] <- [scalar scale] <- query-candidate product; longest first.
_PRODUCT = P("MatMul|BatchMatMulV2|BatchMatMul|Einsum", "product",
             [P("*", "query", keep=True), P("*", "candidates", keep=True)], check=_product_check)
_SCALED = P("Mul", "scale", [_PRODUCT, P("Const", "s", keep=True, check=_scalar_check)])


def _biased(scores):
    return P("BiasAdd|Add|AddV2", "bias", [scores, P("Const", "b", keep=True, check=_bias_check)],
             pred=lambda n, view: n.attr["T"].type == types_pb2.DT_FLOAT, why="'{node}' is not float32")


SCORE_CHAINS = tuple(P("TopKV2", "topk", [scores, None], keep=True)
                     for scores in (_biased(_SCALED), _biased(_PRODUCT), _SCALED, _PRODUCT))


class _ScoreChain:
    """TopKV2's input back to the query-candidate product (SCORE_CHAINS) and
    the candidates behind it; raises SkipMatch."""

    def __init__(self, view, ctx, info, topk):
        self.view, self.ctx, self.info = view, ctx, info
        m = require(SCORE_CHAINS, topk, view)
        require_safe(m, view)
        for node in m.removed:   # the fused op would drop their ordering
            if view.has_control_inputs(node):
                raise SkipMatch(f"'{node.name}' has control inputs")
        self.removed = m.removed  # nodes the fused op replaces
        self.scale = float(view.const_value(m.tensors["s"]).reshape(())) if "s" in m.nodes else 1.0
        self.bias = view.const_value(m.tensors["b"]).reshape(-1).astype(np.float32) if "b" in m.nodes else None
        self.variable = None    # the candidates' tf.Variable, when they are one
        self.shared = False
        self._take_product(m["product"])

    def _take_product(self, node):
        inputs = self.view.data_inputs(node)
        if node.op == "MatMul":
            transposed = node.attr["transpose_b"].b
        elif node.op in ("BatchMatMulV2", "BatchMatMul"):
            transposed = node.attr["adj_y"].b
        else:
            transposed = _einsum_orientation(node)
        q_shape = shapes.shape_of(self.info, inputs[0])
        if q_shape is None or len(q_shape) != 2:
            raise SkipMatch(f"query of '{node.name}' is not [batch, d]")
        self.query = inputs[0]
        self.dim = q_shape[1]
        self._take_candidates(inputs[1], transposed, node.name)

    def _take_candidates(self, tensor, transposed, reader):
        """Sets in_place (the [n, d] float tensor, when the graph holds it that
        way), value_fn (-> numpy [n, d]), n, and shared (whether anything
        but this product reads the matrix), from a Const, a variable read or
        a Transpose of either."""
        src = self.view.node(self.view.skip_identity(tensor))
        self.shared = self.shared or self._read_elsewhere(src.name, reader)
        if src.op == "Transpose" and np.array_equal(self.view.const_value(src.input[1]), [1, 0]):
            return self._take_candidates(src.input[0], not transposed, src.name)
        value = self.view.const_value(src.name)
        if value is None and src.op == "ReadVariableOp":
            handle = self.view.skip_identity(src.input[0]).split(":")[0]
            variable = self.ctx.variables.get(handle)
            if variable is None:
                raise SkipMatch(f"candidate variable behind '{src.name}' is unknown")
            self.variable = variable
            self.shared = self.shared or self._read_elsewhere(handle, src.name)
        elif value is None:
            raise SkipMatch(f"candidates come from {src.op} '{src.name}', not a constant or variable")
        # [n, d] as stored: usable in place for fp32 storage.
        self.in_place = self.view.skip_identity(tensor) if transposed else None
        self.value_fn = lambda: _as_rows(value if value is not None else self.variable.numpy(), transposed)
        shape = list(value.shape) if value is not None else self.variable.shape.as_list()
        if len(shape) != 2 or None in shape:
            raise SkipMatch(f"candidate matrix '{src.name}' is not 2-D with a static shape")
        self.n = shape[0] if transposed else shape[1]
        if self.bias is not None and self.bias.size != self.n:
            raise SkipMatch(f"bias has {self.bias.size} entries for {self.n} candidates")

    def _read_elsewhere(self, name, reader):
        """Whether node `name` feeds anything but `reader` (through Identities)."""
        for consumer, _ in self.view.consumers(name):
            if consumer.op == "Identity":
                if self._read_elsewhere(consumer.name, reader):
                    return True
            elif consumer.name != reader:
                return True
        return False


def _as_rows(value, transposed):
    value = np.asarray(value, np.float32)
    return value if transposed else np.ascontiguousarray(value.T)


def _einsum_orientation(node):
    m = _EINSUM.match(node.attr["equation"].s.decode().replace(" ", ""))
    if not m:
        raise SkipMatch(f"einsum '{node.attr['equation'].s.decode()}' is not a query-candidate product")
    b, d, x, y, ob, on = m.groups()
    if ob != b or len({b, d, on}) != 3:
        raise SkipMatch(f"einsum '{node.attr['equation'].s.decode()}' is not a query-candidate product")
    if (x, y) == (on, d):
        return True
    if (x, y) == (d, on):
        return False
    raise SkipMatch(f"einsum '{node.attr['equation'].s.decode()}' is not a query-candidate product")


def _emit_score_topk(ctx, topk, chain, precision, gpu):
    view = ctx.view
    base = topk.name + "/recopt"
    # Exact int8/bf16 needs the blocks16 scan and the fp32 rows; the GPU
    # kernel has neither, so there the scan's own answer stands (recall_floor).
    exact = precision in EXACT_RETRIEVAL and not gpu
    storage = precision.removesuffix("_approx")
    value = chain.value_fn() if storage != "fp32" or chain.in_place is None else None
    if exact and np.isfinite(value).all():
        return _emit_exact(ctx, topk, chain, storage, value, base)
    if exact:  # a NaN or inf candidate has no quantization bound: fp32 is the exact form
        storage = "fp32"
    # The GPU kernel reads rows (custom_ops/gpu/score_topk_gpu.cu); on the CPU
    # blocks16 is faster at every batch (bench/retrieval.py times both layouts),
    # worth a second copy only when one is made anyway or the original goes.
    blocks = not gpu and (storage != "fp32" or not chain.shared or chain.in_place is None)
    layout = "blocks16" if blocks else "rows"
    if not blocks and storage == "fp32" and chain.in_place is not None:
        candidates, row_scales = chain.in_place, np.zeros([0], np.float32)
    else:
        value = chain.value_fn() if value is None else value
        stored, row_scales = retrieval.encode(value, storage)
        if blocks:
            stored = retrieval.to_blocks(stored)
        candidates = _stored_candidates(ctx, chain, stored, (storage, layout), base)
    inputs = [chain.query, candidates, view.add_const(base + "/row_scales", row_scales).name, _bias(view, chain, base),
              topk.input[1]]
    # The chain's nodes have no control inputs (_ScoreChain refuses them).
    view.rewrite(topk, spec.SCORE_TOPK, inputs, {**_attrs(topk, chain, storage), "layout": layout})
    view.remove_nodes([n.name for n in chain.removed])


def _emit_exact(ctx, topk, chain, storage, value, base):
    """Recopt>ExactScoreTopK over the centred, quantized candidates. The
    rescoring reads the fp32 rows in place where the graph holds them as
    [n, d] (1.25x the fp32 bytes with int8), else from a copy."""
    view = ctx.view
    blocks, row_scales, bounds, centre = retrieval.encode_exact(value, storage)
    candidates = _stored_candidates(ctx, chain, blocks, (storage, "blocks16", "centred"), base)
    rows = chain.in_place if chain.in_place is not None else \
        _stored_candidates(ctx, chain, value, ("fp32", "rows"), base, "exact_rows")
    scales = view.add_const(base + "/row_scales", row_scales).name
    # int8 row bounds are the row scales: one constant for both inputs.
    bounds = scales if storage == "int8" else view.add_const(base + "/row_bounds", bounds).name
    inputs = [chain.query, candidates, scales, _bias(view, chain, base), topk.input[1], rows, bounds,
              view.add_const(base + "/centre", centre).name]
    view.rewrite(topk, spec.EXACT_SCORE_TOPK, inputs, _attrs(topk, chain, storage))
    view.remove_nodes([n.name for n in chain.removed])


def _bias(view, chain, base):
    return view.add_const(base + "/bias", chain.bias if chain.bias is not None else np.zeros([0], np.float32)).name


def _attrs(topk, chain, storage):
    return {"Tcand": tf.as_dtype(_TCAND[storage]), "scale": chain.scale, "sorted": topk.attr["sorted"].b,
            "num_candidates": chain.n}


def _stored_candidates(ctx, chain, stored, encoding, base, what="candidates"):
    """The re-encoded candidates as a Const, or, when they came from a
    variable, as a read of a derived variable: a large matrix stays out of
    the GraphDef (2 GiB limit) and goes to the checkpoint, and every
    signature reading the same variable shares one copy."""
    view = ctx.view
    if chain.variable is None:
        return view.add_const(f"{base}/{what}", stored).name
    key = ("score_topk",) + encoding + (id(chain.variable),)
    if key not in ctx.derived:
        name = chain.variable.name.split(":")[0] + "_recopt_" + "_".join(encoding)
        ctx.derived[key] = tf.Variable(stored, trainable=False, name=name)
    copy = ctx.derived[key]
    handle = ctx.add_variable_handle(f"{base}/{what}_handle", copy)
    dtype = copy.dtype.as_datatype_enum
    return view.add_node("ReadVariableOp", f"{base}/{what}", [handle], {"dtype": dtype}).name
