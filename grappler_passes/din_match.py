"""DIN attention pooling as a plan for Recopt>DinAttention: the weighted
sum of keys (DinPooling) or the weights used as such (DinWeights), the
scores behind it (din_scores), and the activation unit's concatenation of
the repeated query and the keys (parts q, k, q-k, k-q, q*k). Reads only;
fuse_attention emits."""
import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import shapes
from grappler_passes.din_scores import ScoreReader
from grappler_passes.pass_base import NoMatch, SkipMatch

_REPEAT_OPS = ("ExpandDims", "StridedSlice", "Tile", "BroadcastTo", "Reshape")


class DinPooling(ScoreReader):
    """Sum(w * keys, axis=1) or BatchMatMulV2(w [B, 1, T], keys), anchored
    at the Sum / BatchMatMulV2; output "pooled"."""
    output = "pooled"

    def __init__(self, view, info, anchor):
        super().__init__(view, info, anchor)
        weights, self.keys, layout = self._pooling()
        self.mlp, self.mask, self.pad, self.softmax = self._scores(weights, layout)
        self.query, self.parts = self._concat()
        self._check_shapes()

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


class DinWeights(DinPooling):
    """Masked (softmaxed) activation-unit scores used as [B, T] weights. The
    keys are not named by a pooling, so each sequence the concatenation
    reads is tried as the keys against the repeated query."""
    output = "weights"

    def __init__(self, view, info, anchor):
        ScoreReader.__init__(self, view, info, anchor)
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


def _part_name(kind, operands, q_rep):
    if kind == "plain":
        return "q" if operands[0] == q_rep else "k"
    if len(set(operands)) != 2:
        raise SkipMatch(f"a {kind} of a tensor with itself")
    if kind == "Mul":
        return "q*k"
    return "q-k" if operands[0] == q_rep else "k-q"


def _grows_only_middle_ones(src, dims):
    if len(src) != len(dims) or src[0] != dims[0] and src[0] is not None:
        return False
    return all(a == b or a == 1 for a, b in zip(src[1:-1], dims[1:-1]))
