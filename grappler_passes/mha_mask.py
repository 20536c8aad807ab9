"""Multi-head attention's masked, scaled scores, read back from the Softmax
(for mha_match): where(keep, s, pad) / where(blocked, pad, s) or an
additive s + c * (1 - keep) / s + c * blocked, masks of [B, T, S] or
[B, 1 or N, T or 1, S] (or [1, ...]: shared by the batch), masks built from
the scores' shape alone (a causal band_part, recognised by probing), and
the scale s * c or s / c. Reads only."""
import dataclasses

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import probe
from grappler_passes.graph_view import is_stateful
from grappler_passes.pass_base import NoMatch, SkipMatch
from grappler_passes.tensor_reader import TensorReader

SELECT = ("SelectV2", "Select")
# Axis roles, as digits so they never clash with an equation's own letters:
# batch, head, query step, key step, value feature.
AX_B, AX_N, AX_T, AX_S, AX_HV = "01234"
ADD_OPS = ("AddV2", "Add", "BiasAdd")


@dataclasses.dataclass
class Mask:
    tensor: str            # bool, [B, T or 1, S] after the fix-ups below, or [B, N, T or 1, S]
    negate: bool           # the graph's tensor is True where attention is blocked
    squeeze: bool          # the graph's tensor is [B, 1, T or 1, S]
    mode: str              # "select" or "add"
    value: float
    constant: np.ndarray = None   # the mask's value when it is computed from the scores' shape alone
    causal: bool = False          # it is Keras' causal mask of the scores' (dynamic) shape: an op attr
    heads: int = 1                # N for a mask with a head axis of N > 1 (one mask per head)


class AttentionReader(TensorReader):
    """One attention, anchored at its Softmax, and its constant operands."""

    def __init__(self, view, info, softmax):
        super().__init__(view, info)
        self.softmax = softmax
        self.interior = {softmax.name}   # nodes the fused op replaces

    def _const_operand(self, node):
        """(other operand, constant value) of a two-input add; BiasAdd's bias is input 1."""
        a, b = (self._t(i) for i in node.input[:2])
        for x, c in ((a, b),) if node.op == "BiasAdd" else ((a, b), (b, a)):
            value = self.view.const_value(c)
            if value is not None:
                return x, value
        return None

    def _uniform(self, tensor):
        """The one value of a constant whose elements are all equal, else None."""
        value = self.view.const_value(tensor)
        if value is None or value.size == 0:
            return None
        flat = value.ravel()
        if not np.all(flat == flat[0]):
            return None
        return bool(flat[0]) if value.dtype == np.bool_ else float(flat[0])


class MaskReader(AttentionReader):
    """The Softmax's input: scores, scale and mask."""

    def _masked_scores(self, tensor):
        """(raw scores tensor, scale, Mask or None)."""
        node = self._producer(tensor)
        found = None
        if node is not None and node.op in SELECT:
            found = self._select_mask(node)
        elif node is not None and node.op in ("AddV2", "Add"):
            found = self._added_mask(node)
        mask = None
        if found is not None:
            mask, tensor = found
            self.interior.add(node.name)
        scale, raw = self._scaled(tensor)
        self.score_tensors = {self._t(tensor), self._t(raw)}   # what a mask may read the shape of
        return raw, scale, mask

    def _select_mask(self, node):
        cond, a, b = (self._t(i) for i in self.view.data_inputs(node)[:3])
        pad_b, pad_a = self._pad(b), self._pad(a)
        if pad_b is not None:
            return self._keep(cond, negate=False, mode="select", value=pad_b), a
        if pad_a is not None:   # where(blocked, pad, s)
            return self._keep(cond, negate=True, mode="select", value=pad_a), b
        raise NoMatch()

    def _pad(self, tensor):
        """The value of a uniform pad: a constant, Fill(_, c), ZerosLike(_) or
        c * OnesLike(_) (the like-ops only read the scores' shape)."""
        value = self._uniform(tensor)
        node = self._producer(tensor)
        if value is not None or node is None:
            return value
        if node.op in ("ZerosLike", "OnesLike", "Fill"):
            value = {"ZerosLike": 0.0, "OnesLike": 1.0}.get(node.op)
            value = self._uniform(self._t(node.input[1])) if value is None else value
        elif node.op == "Mul":
            a, b = (self._pad(self._t(i)) for i in node.input[:2])
            value = None if a is None or b is None else a * b
        if value is not None:
            self.interior.add(node.name)
        return value

    def _added_mask(self, node):
        for s, m in (node.input[:2], node.input[1::-1]):
            found = self._additive(self._t(m))
            if found is not None:
                negate, cond, value = found
                return self._keep(cond, negate=negate, mode="add", value=value), self._t(s)
        return None

    def _additive(self, tensor):
        """(negate, bool tensor, c) for c * (1 - Cast(keep)) or c * Cast(blocked)."""
        node = self._producer(tensor)
        if node is None or node.op != "Mul":
            return None
        for f, c in (node.input[:2], node.input[1::-1]):
            value = self._uniform(self._t(c))
            factor = self._producer(f)
            if value is None or factor is None or not np.isfinite(value):
                continue
            negate = True
            if factor.op == "Sub" and self._uniform(self._t(factor.input[0])) == 1.0:
                negate, factor = False, self._producer(factor.input[1])
            if factor is not None and factor.op == "Cast" and self._dtype(factor.input[0]) == types_pb2.DT_BOOL:
                return negate, self._t(factor.input[0]), value
        return None

    def _keep(self, cond, negate, mode, value):
        cond = self._strip_all_true(cond)
        node = self._producer(cond)
        squeeze = True
        if node is not None and node.op == "ExpandDims" and self.view.const_int(node.input[1]) in (1, -3):
            cond, squeeze = self._t(node.input[0]), False
        dims = self._dims(cond)
        heads = dims[1] if squeeze and len(dims) == 4 and dims[1] is not None and dims[1] > 1 else 1
        if self._dtype(cond) != types_pb2.DT_BOOL or len(dims) != (4 if squeeze else 3) or \
                (squeeze and dims[1] != heads):
            raise SkipMatch(f"the mask '{cond}' {dims} is not a bool [B, T, S] (or [B, 1 or N, T, S]) tensor")
        return Mask(cond, negate, squeeze and heads == 1, mode, float(value), heads=heads)

    @staticmethod

    def _check_mask_heads(mask, heads):
        """A mask's head axis must be 1 or the projections' head count."""
        if mask.heads not in (1, heads):
            raise SkipMatch(f"the mask '{mask.tensor}' has {mask.heads} heads, the projections {heads}")

    def _strip_all_true(self, cond):
        """Keras 3 ands the mask with ones_like(scores): drop that operand."""
        node = self._producer(cond)
        if node is None or node.op != "LogicalAnd":
            return cond
        for keep, ones in (node.input[:2], node.input[1::-1]):
            fill = self._producer(ones)
            if fill is not None and fill.op == "Fill" and self._uniform(self._t(fill.input[1])) is True:
                self.interior.update({node.name, fill.name})
                shape = self._producer(fill.input[0])
                if shape is not None and shape.op == "Shape":
                    self.interior.add(shape.name)
                return self._t(keep)
        return cond

    def _scaled(self, tensor):
        node = self._producer(tensor)
        if node is None or node.op not in ("Mul", "RealDiv"):
            return 1.0, tensor
        a, b = (self._t(i) for i in node.input[:2])
        if node.op == "Mul" and self._uniform(a) is not None:
            a, b = b, a
        c = self._uniform(b)
        if c is None or isinstance(c, bool):
            return 1.0, tensor
        self.interior.add(node.name)
        return (float(c) if node.op == "Mul" else 1.0 / float(c)), a

    def _shape_only(self, mask):
        """Keras 3's causal mask is band_part(ones(shape(scores)[-2:]), -1, 0)
        [None, None]: computed from the scores' shape alone. With T and S
        static it is one constant [1, 1, T, S] (probed at two batch and head
        counts, which must agree): mask.constant. With them dynamic it is
        recognised by probing several T, S against that band: mask.causal,
        an attr of the op. Either way its nodes join the pattern, so the
        scores have no outside use. Any other mask (one per head included)
        is left as it is."""
        found = None if mask.heads > 1 else self._shape_reads(mask.tensor)
        if found is None:
            return
        nodes, reads = found
        dims = [self._dims(self._t(r.input[0])) for r in reads]
        if any(len(d) != 4 for d in dims):
            return
        if all(None not in d[2:] for d in dims):
            values = self._probe_shape(mask.tensor, reads, [(1, 1) + tuple(d[2:]) for d in dims],
                                       [(3, 2) + tuple(d[2:]) for d in dims])
            if values is not None and values[0].shape == values[1].shape and np.array_equal(*values) and \
                    values[0].shape[0] == 1:
                mask.constant = values[0]
                self.interior.update(nodes)
            return
        trials = [(1, 1, 1, 1), (2, 3, 3, 3), (1, 2, 4, 6), (3, 1, 6, 4), (1, 1, 7, 2)]
        values = self._probe_shape(mask.tensor, reads, *[[t] * len(reads) for t in trials])
        if values is None or mask.negate:
            return
        for (_, _, t, s), v in zip(trials, values):
            if v.ndim < 2 or v.shape[-2:] != (t, s) or any(n != 1 for n in v.shape[:-2]) or \
                    not np.array_equal(v.reshape(t, s), np.tril(np.ones((t, s), bool))):
                return
        mask.causal = True
        self.interior.update(nodes)

    def _shape_reads(self, cond):
        """(nodes, Shape nodes) when cond is computed from constants and the
        scores' shape alone, else None."""
        nodes, reads, stack = set(), [], [cond]
        while stack:
            node = self._producer(stack.pop())
            if node is None or node.name in nodes or node.op == "Const":
                continue
            if node.op == "Placeholder" or is_stateful(node.op) or len(nodes) >= 64:
                return None
            nodes.add(node.name)
            if node.op == "Shape":
                reads.append(node)
                continue
            stack.extend(self._t(i) for i in self.view.data_inputs(node))
        if not reads or any(self._t(r.input[0]) not in self.score_tensors for r in reads):
            return None
        return nodes, reads

    def _probe_shape(self, cond, reads, *shapes_per_probe):
        """cond's value for each probe (a shape per Shape node), or None if
        any probe fails."""
        probes = [[np.array(shape, dtype=_shape_dtype(r)) for r, shape in zip(reads, shapes)]
                  for shapes in shapes_per_probe]
        values = probe.evaluate(self.view, [cond], [f"{r.name}:0" for r in reads], probes)
        return None if any(v is None for v in values) else [v[0] for v in values]

    def _check_private(self, final):
        """Every intermediate the op replaces is used only inside the pattern."""
        for name in self.interior - {final.name}:
            if name in self.view.protected or self.view.control_consumers(name):
                raise SkipMatch(f"'{name}' is a model output or has control uses")
            for user, _ in self.view.consumers(name):
                if user.name not in self.interior:
                    raise SkipMatch(f"'{name}' is also used by '{user.name}'")


def _shape_dtype(shape_node):
    return np.int64 if shape_node.attr["out_type"].type == types_pb2.DT_INT64 else np.int32
