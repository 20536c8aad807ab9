r"""DIN attention pooling -> Recopt>DinAttention (the [B, T, parts*d]
concatenation, the per-position scores and the weighted keys are never
written). Runs after fuse_dense, so the activation unit is already one
Recopt>FusedMLP whose last layer outputs one score:

   q [B, d] -> ExpandDims/Tile/BroadcastTo/Reshape -> q_rep [B, T, d]   keys [B, T, d]
                 ConcatV2([q_rep | keys | Sub(q_rep, keys) | Sub(keys, q_rep) | Mul(q_rep, keys)], -1)
                                       |
                           Recopt>FusedMLP -> s [B, T, 1]
                                       |
   column:  SelectV2(ExpandDims(mask, -1), s, pad)                           raw weights
   flat:    ExpandDims([Softmax](SelectV2(mask, Squeeze(s, -1), pad)), -1)   [B, T] scores
                                       |
                      Sum(Mul(w, keys), axis=1)  -> pooled [B, d]      rewritten in place

   row:     BatchMatMulV2([Softmax](SelectV2(ExpandDims(mask, 1), Transpose(s, [0, 2, 1]), pad)), keys)
            -> [B, 1, d] (DeepCTR's form)   rewritten in place as ExpandDims(Recopt>DinAttention, 1)

   weights: [Softmax](SelectV2(mask, s[..., 0] or Squeeze(s, -1), pad)) [B, T] used as such (DIEN
            feeds them to its AUGRU)   rewritten in place as Recopt>DinAttention(output="weights"); the
            keys are the sequence the activation unit combines with the repeated query

pad: ZerosLike(s), a constant of equal values, Fill(_, c), BroadcastTo(c, _) or OnesLike(s) * c.
Without the SelectV2 (fixed-length sequences, no mask) every position counts:
the op gets an all-true mask, Fill(Shape(keys)[:2], True).
What the rewrite orphans is left for prune_dead_nodes.
"""
import numpy as np
from tensorflow.core.framework import attr_value_pb2, types_pb2

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.pass_base import GraphPass, NoMatch, SkipMatch

FUSED_OP = spec.DIN_ATTENTION
_SELECT = ("SelectV2", "Select")
_REPEAT_OPS = ("ExpandDims", "StridedSlice", "Tile", "BroadcastTo", "Reshape")


class FuseAttention(GraphPass):
    name = "fuse_attention"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "DIN attention (FusedMLP over [q, k, q-k, q*k], mask, [softmax], weighted sum) -> Recopt>DinAttention"

    def run(self, ctx, result):
        view = ctx.view
        if not any(n.op == spec.FUSED_MLP for n in view.nodes()):
            return  # spares the shape inference of the whole graph
        info = view.tensor_info()
        poolings = [n for n in view.nodes() if n.op in ("Sum", "BatchMatMulV2", "BatchMatMul")]
        _fuse_each(_Attention, view, info, poolings, result)
        # Scores left over once every pooling is fused are used as weights;
        # softmaxes orphaned by a pooling rewrite are not live any more.
        softmaxes = [n for n in view.nodes() if n.op == "Softmax"]
        live = view.live_nodes() if softmaxes else set()
        _fuse_each(_Weights, view, info, [n for n in softmaxes if n.name in live], result)


def _fuse_each(kind, view, info, anchors, result):
    for node in anchors:
        try:
            kind(view, info, node).emit()
        except NoMatch:
            continue
        except SkipMatch as why:
            result.skip(node.name, str(why))
            continue
        result.apply()


class _Attention:
    def __init__(self, view, info, anchor):
        self.view, self.info, self.anchor = view, info, anchor
        weights, self.keys, layout = self._pooling()
        self.mlp, self.mask, self.pad, self.softmax = self._scores(weights, layout)
        self.query, self.parts = self._concat()
        self._check_shapes()

    # ---- the weighted sum -------------------------------------------------
    def _pooling(self):
        """(weights tensor, keys tensor, layout of the weights)."""
        a, view = self.anchor, self.view
        if a.op == "Sum":
            axis = view.const_value(a.input[1])
            mul = self._producer(a.input[0])
            if axis is None or np.size(axis) != 1 or int(np.ravel(axis)[0]) not in (1, -2) or \
                    a.attr["keep_dims"].b or mul is None or mul.op != "Mul":
                raise NoMatch()
            x, y = (self._t(i) for i in view.data_inputs(mul)[:2])
            if self._dims(x)[-1:] == [1]:
                return x, y, "column"
            if self._dims(y)[-1:] == [1]:
                return y, x, "column"
            raise NoMatch()
        if a.attr["adj_x"].b or a.attr["adj_y"].b:
            raise NoMatch()
        x, y = (self._t(i) for i in view.data_inputs(a)[:2])
        if len(self._dims(x)) != 3 or self._dims(x)[1] != 1:
            raise NoMatch()
        return x, y, "row"

    # ---- weights -> masked scores ----------------------------------------
    def _scores(self, tensor, layout):
        """(FusedMLP node, mask [B, T] tensor or None when unmasked, pad value, softmax?)."""
        node = self._producer(tensor)
        source, axes = self._unsqueezed(node)
        if layout == "column" and axes == [2]:
            layout, tensor = "flat", source
            node = self._producer(tensor)
        softmax = node is not None and node.op == "Softmax"
        if softmax:
            if layout == "column":
                raise NoMatch()  # a softmax over a size-1 axis
            tensor = self._t(node.input[0])
            node = self._producer(tensor)
        if node is None or node.op not in _SELECT:   # every position counts
            return self._scorer(tensor, layout), None, 0.0, softmax
        cond, scores, pad = (self._t(i) for i in self.view.data_inputs(node)[:3])
        mlp = self._scorer(scores, layout)
        return mlp, self._mask(cond, layout), self._pad_value(pad, scores), softmax

    def _scorer(self, tensor, layout):
        node = self._producer(tensor)
        if layout == "flat" and node is not None and (node.op == "Reshape" or self._drops_last_axis(node)):
            self._same_positions(tensor, node, 1)
            node = self._producer(node.input[0])
        elif layout == "row" and node is not None and node.op in ("Transpose", "Reshape"):
            if node.op == "Transpose" and not np.array_equal(self.view.const_value(node.input[1]), [0, 2, 1]):
                raise NoMatch()
            self._same_positions(tensor, node, 2)
            node = self._producer(node.input[0])
        if node is None or node.op != spec.FUSED_MLP:
            raise NoMatch()
        if self._dims(node.name)[-1:] != [1] or len(self._dims(node.name)) != 3:
            raise SkipMatch(f"'{node.name}' does not give one score per position [B, T, 1]")
        if self.view.has_control_inputs(node) or node.name in self.view.protected:
            raise SkipMatch(f"'{node.name}' has control inputs or is a signature output")
        return node

    def _drops_last_axis(self, node):
        """Squeeze(s, -1) or s[..., 0] / s[:, :, 0] of the [B, T, 1] scores."""
        if node.op == "Squeeze":
            return list(node.attr["squeeze_dims"].list.i) in ([2], [-1])
        if node.op != "StridedSlice" or len(self._dims(node.input[0])) != 3:
            return False
        a, view = node.attr, self.view
        begin, strides = view.const_value(node.input[1]), view.const_value(node.input[3])
        if begin is None or strides is None or np.any(strides != 1) or a["new_axis_mask"].i:
            return False
        last = len(begin) - 1
        leading = (a["ellipsis_mask"].i == 1 and last == 1) or \
            (last == 2 and not a["ellipsis_mask"].i and a["begin_mask"].i & a["end_mask"].i & 3 == 3)
        return leading and a["shrink_axis_mask"].i == 1 << last and int(begin[last]) in (0, -1)

    def _same_positions(self, tensor, node, axis):
        """A reshape of the [B, T, 1] scores must leave T at `axis` (a static
        T on both sides), not regroup positions across examples."""
        out, src = self._dims(tensor), self._dims(node.input[0])
        if len(out) != axis + 1 or len(src) != 3 or src[1] is None or out[axis] != src[1] or \
                (axis == 2 and out[1] != 1):
            raise SkipMatch(f"'{node.name}' does not keep one score per position")

    def _mask(self, cond, layout):
        if layout != "flat":
            source, axes = self._unsqueezed(self._producer(cond))
            if axes != ([2] if layout == "column" else [1]):
                raise SkipMatch("the mask is not a [B, T] mask with an axis inserted")
            cond = source
        if len(self._dims(cond)) != 2 or shapes.dtype_of(self.info, cond) != types_pb2.DT_BOOL:
            raise SkipMatch(f"the mask '{cond}' is not a bool [B, T] tensor")
        return cond

    def _pad_value(self, tensor, scores):
        view, node = self.view, self._producer(tensor)
        value = view.const_value(tensor)
        if node is not None and node.op == "ZerosLike" and self._t(node.input[0]) == scores:
            return 0.0
        if node is not None and node.op == "Fill":
            value = view.const_value(node.input[1])
        if node is not None and node.op == "BroadcastTo":
            value = view.const_value(node.input[0])
        if node is not None and node.op == "Mul":
            a, b = (self._t(i) for i in view.data_inputs(node)[:2])
            ones, value = (self._producer(a), view.const_value(b)) if view.const_value(a) is None \
                else (self._producer(b), view.const_value(a))
            if ones is None or ones.op != "OnesLike" or self._t(ones.input[0]) != scores:
                value = None
        value = None if value is None else np.ravel(value)
        if value is None or value.size == 0 or not np.all(value == value[0]):
            raise SkipMatch("the masked positions' score is not one constant")
        return float(value[0])

    # ---- the activation unit's input ------------------------------------
    def _concat(self):
        """(query [B, d] tensor, parts) from the concatenation the MLP reads."""
        blocks = self._blocks()
        queries = {t for kind, operands in blocks for t in operands} - {self.keys}
        if len(queries) != 1:
            raise SkipMatch(f"'{self.mlp.name}' does not read one query combined with the pooled keys '{self.keys}'")
        q_rep = queries.pop()
        parts = [_part_name(kind, operands, q_rep) for kind, operands in blocks]
        return self._query_source(q_rep), parts

    def _blocks(self):
        """(kind, operands) of each block of the concatenation the MLP reads."""
        concat = self._producer(self.mlp.input[0])
        if concat is not None and concat.op == "ConcatV2":
            inputs = self.view.data_inputs(concat)
            axis = self.view.const_value(inputs[-1])
            if axis is None or int(axis) not in (2, -1):
                raise SkipMatch(f"'{concat.name}' does not concatenate along the last axis")
            if len(self.view.consumers(concat.name)) != 1:
                raise SkipMatch(f"'{concat.name}' is used elsewhere")
            inputs = inputs[:-1]
        else:  # one block (tf.concat of one tensor traces to no op)
            inputs = [self.mlp.input[0]]
        return [self._block(self._t(t)) for t in inputs]

    def _block(self, tensor):
        node = self._producer(tensor)
        if node is not None and node.op in ("Sub", "Mul") and len(self._dims(tensor)) == 3:
            return node.op, tuple(self._t(i) for i in self.view.data_inputs(node)[:2])
        return "plain", (tensor,)

    def _query_source(self, q_rep):
        """The [B, d] tensor q_rep repeats along T: shape ops that keep axis 0
        (the batch) and the last axis (d), and only grow axes of size 1."""
        tensor = q_rep
        while True:
            dims = self._dims(tensor)
            node = self._producer(tensor)
            if len(dims) == 2 or node is None or node.op not in _REPEAT_OPS:
                break
            source, axes = self._unsqueezed(node)
            if node.op == "StridedSlice" and source is None:
                break
            source = source or self._t(node.input[0])
            src = self._dims(source)
            if len(src) < 2 or src[-1] != dims[-1] or dims[-1] is None:
                raise SkipMatch(f"'{node.name}' does not keep the query's last axis")
            if axes and not all(0 < a < len(dims) - 1 for a in axes):
                raise SkipMatch(f"'{node.name}' inserts an axis at the batch or feature end")
            multiples = self.view.const_value(node.input[1]) if node.op == "Tile" else None
            if node.op == "Tile" and (multiples is None or multiples[0] != 1 or multiples[-1] != 1):
                raise SkipMatch(f"'{node.name}' may repeat along the batch or feature axis")
            if node.op in ("Tile", "BroadcastTo") and not _grows_only_middle_ones(src, dims):
                raise SkipMatch(f"'{node.name}' repeats along the batch or feature axis")
            if node.op == "Reshape" and (None in src[1:] or None in dims[1:] or
                                         int(np.prod(src[1:-1])) != int(np.prod(dims[1:-1]))):
                raise SkipMatch(f"'{node.name}' may not keep the batch axis")
            tensor = source
        dims = self._dims(tensor)
        if len(dims) != 2 or dims[-1] != self._dims(self.keys)[-1]:
            raise SkipMatch(f"the query '{tensor}' is not [B, d]")
        return tensor

    def _check_shapes(self):
        keys = self._dims(self.keys)
        if len(keys) != 3 or keys[-1] is None:
            raise SkipMatch(f"keys '{self.keys}' are not [B, T, d] with a static d")
        mask = self._dims(self.mask) if self.mask is not None else keys[:2]
        if mask[1] != keys[1] or (mask[0] == 1 and keys[0] != 1):
            raise SkipMatch(f"the mask '{self.mask}' {mask} is not [B, T] for keys {keys}")
        for t in (self.keys, self.query):
            if shapes.dtype_of(self.info, t) != types_pb2.DT_FLOAT:
                raise SkipMatch(f"'{t}' is not float32")
        first = self.view.const_value(self.mlp.input[1])
        if first is None or first.shape[0] != len(self.parts) * keys[-1]:
            raise SkipMatch(f"'{self.mlp.name}': first weight is not a constant [{len(self.parts)} x {keys[-1]}, h]")

    # ---- rewrite ---------------------------------------------------------
    def _op_inputs(self, output):
        """(inputs, attrs) of the fused op."""
        view, mlp = self.view, self.mlp
        layers = mlp.attr["num_layers"].i
        mask = self.mask if self.mask is not None else self._all_positions()
        inputs = [self.query, self.keys, mask] + view.data_inputs(mlp)[1:1 + 2 * layers]
        attrs = {k: attr_value_pb2.AttrValue() for k in ("num_layers", "activations", "alphas", "weights_bf16")}
        for k, v in attrs.items():
            v.CopyFrom(mlp.attr[k])   # copies: the MLP node dies with the rewrite
        attrs.update({
            "parts": [p.encode() for p in self.parts],
            "softmax": self.softmax,
            "pad_value": self.pad,
            "output": output.encode(),
        })
        return inputs, attrs

    def _all_positions(self):
        """An all-true [B, T] mask for unmasked attention: Fill(Shape(keys)[:2], True)."""
        view, base = self.view, self.anchor.name + "/recopt_all_positions"
        int32 = types_pb2.DT_INT32
        shape = view.add_node("Shape", base + "/shape", [self.keys],
                              {"T": types_pb2.DT_FLOAT, "out_type": int32})
        dims = view.add_strided_slice(base + "/dims", shape.name, types_pb2.DT_INT32, [0], [2])
        true = view.add_const(base + "/true", np.array(True))
        return view.add_node("Fill", base, [dims.name, true.name], {
            "T": types_pb2.DT_BOOL, "index_type": int32}).name

    def emit(self):
        view = self.view
        inputs, attrs = self._op_inputs("pooled")
        a = self.anchor
        if a.op == "Sum":
            view.rewrite(a, FUSED_OP, inputs, attrs)
        else:  # [B, 1, d]: the fused op's [B, d] with the axis put back
            fused = view.add_node(FUSED_OP, a.name + "/recopt_attention", inputs, attrs, device=a.device)
            axis = view.add_const(a.name + "/recopt_axis", np.int32(1))
            view.rewrite(a, "ExpandDims", [fused.name, axis.name],
                         {"T": types_pb2.DT_FLOAT,
                          "Tdim": types_pb2.DT_INT32})

    # ---- helpers ---------------------------------------------------------
    def _t(self, tensor):
        return self.view.source(tensor)

    def _producer(self, tensor):
        return self.view.node(self._t(tensor))

    def _dims(self, tensor):
        return shapes.shape_of(self.info, tensor) or []

    def _unsqueezed(self, node):
        """(input tensor, positions of the size-1 axes `node` inserts, in its
        output) for ExpandDims or a StridedSlice that only adds axes (x[:, None]);
        (None, None) for anything else."""
        if node is None or node.op not in ("ExpandDims", "StridedSlice"):
            return None, None
        source = self._t(node.input[0])
        rank = len(self._dims(source))
        if node.op == "ExpandDims":
            value = self.view.const_value(node.input[1])
            if value is None or np.size(value) != 1 or not rank:
                return None, None
            return source, [int(np.ravel(value)[0]) % (rank + 1)]
        return source, _new_axes(node, self.view, rank)


class _Weights(_Attention):
    """Masked (softmaxed) activation-unit scores used as [B, T] weights. The
    keys are not named by a pooling, so each sequence the concatenation
    reads is tried as the keys against the repeated query."""

    def __init__(self, view, info, anchor):
        self.view, self.info, self.anchor = view, info, anchor
        if len(self._dims(anchor.name)) != 2:
            raise NoMatch()
        self.mlp, self.mask, self.pad, self.softmax = self._scores(anchor.name, "flat")
        found = []
        for keys in sorted({t for _, operands in self._blocks() for t in operands}):
            self.keys = keys
            try:
                found.append((keys, self._concat()))
            except SkipMatch:
                continue
        if len(found) != 1:
            raise SkipMatch(f"'{self.mlp.name}' does not read one query repeated against one key sequence")
        self.keys, (self.query, self.parts) = found[0]
        self._check_shapes()

    def emit(self):
        inputs, attrs = self._op_inputs("weights")
        self.view.rewrite(self.anchor, FUSED_OP, inputs, attrs)


def _part_name(kind, operands, q_rep):
    if kind == "plain":
        return "q" if operands[0] == q_rep else "k"
    if len(set(operands)) != 2:
        raise SkipMatch(f"a {kind} of a tensor with itself")
    if kind == "Mul":
        return "q*k"
    return "q-k" if operands[0] == q_rep else "k-q"


def _new_axes(node, view, rank):
    """Output positions of a StridedSlice's new axes when it slices nothing
    else (every other axis full range, stride 1, at most an ellipsis); else None."""
    a = node.attr
    strides = view.const_value(node.input[3])
    new, ellipsis, full = a["new_axis_mask"].i, a["ellipsis_mask"].i, a["begin_mask"].i & a["end_mask"].i
    if strides is None or np.any(strides != 1) or a["shrink_axis_mask"].i or not new or bin(ellipsis).count("1") > 1:
        return None
    specs = len(strides)
    sliced = sum(1 for i in range(specs) if not (new | ellipsis) >> i & 1)
    if sliced > rank:
        return None
    axes, pos = [], 0
    for i in range(specs):
        if ellipsis >> i & 1:
            pos += rank - sliced
        elif new >> i & 1:
            axes.append(pos)
            pos += 1
        elif full >> i & 1:
            pos += 1
        else:
            return None
    return axes


def _grows_only_middle_ones(src, dims):
    if len(src) != len(dims) or src[0] != dims[0] and src[0] is not None:
        return False
    return all(a == b or a == 1 for a, b in zip(src[1:-1], dims[1:-1]))
