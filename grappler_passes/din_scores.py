"""DIN attention's per-position scores, read back from the weighted sum:
the activation unit's FusedMLP giving [B, T, 1], reshaped or squeezed to
[B, T] (or transposed to [B, 1, T], DeepCTR's row form), masked by
SelectV2(mask, s, pad) and optionally softmaxed (see fuse_attention's
sketch). ScoreReader only reads; din_match builds on it."""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.pass_base import NoMatch, SkipMatch
from grappler_passes.tensor_reader import TensorReader

SELECT = ("SelectV2", "Select")


class ScoreReader(TensorReader):
    """Reads the scores of one attention, anchored at its pooling or weights."""

    def __init__(self, view, info, anchor):
        super().__init__(view, info)
        self.anchor = anchor

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
        if node is None or node.op not in SELECT:   # every position counts
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
