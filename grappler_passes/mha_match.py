r"""Reads a multi-head attention subgraph back to its weights, whatever
spelling built it (Keras 3 and tf_keras MultiHeadAttention, or a
hand-written one with Dense layers, reshapes and transposes):

  proj(x) = [Mul(_, c)] ( Einsum(x, W[d, N, H]) | Reshape(MatMul(x, W[d, N*H]) [+ b], [., L, N, H]) ) [+ b[N, H]]
  Q, K, V = proj(query), proj(key), proj(value)                  each [B, L, N, H], maybe Transposed
  s = Einsum(Q, K) | BatchMatMulV2(Q, K, adj_y)                 -> [B, N, T, S]
  P = Softmax( mask( s * c | s / c ) )                           mask: where(keep, s, pad) or s + pad * (1 - keep)
  C = Einsum(P, V) | BatchMatMulV2(P, V)                         -> maybe Transposed to [B, T, N, Hv]
  out = ( Einsum(C, Wo[N, Hv, E]) | BatchMatMulV2(Reshape(C, [., T, N*Hv]), Wo[N*Hv, E]) ) [+ bo]

Every contraction is read as an einsum over letters, and every Transpose
renames letters, so axis roles (batch, head, step, feature) are checked,
not node names or operand order.
"""
import dataclasses

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes.pass_base import NoMatch, SkipMatch
from grappler_passes import probe, shapes
from grappler_passes.graph_view import is_stateful, parse_input

_SELECT = ("SelectV2", "Select")
# Axis roles, as digits so they never clash with an equation's own letters:
# batch, head, query step, key step, value feature.
_B, _N, _T, _S, _HV = "01234"
_ADD = ("AddV2", "Add", "BiasAdd")


@dataclasses.dataclass
class Projection:
    source: str            # the [B, L, d] input
    kernel: np.ndarray     # [d, N * width]
    bias: np.ndarray       # [N * width]
    heads: int
    width: int
    scale: float           # a constant factor on the projection (tf_keras scales the query)


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


@dataclasses.dataclass
class Attention:
    query: Projection
    key: Projection
    value: Projection
    scale: float
    mask: Mask             # or None
    zero_masked: bool      # masked weights zeroed again after the softmax
    output_kernel: np.ndarray   # [N * Hv, E]
    output_bias: np.ndarray     # [E]
    final: object               # the NodeDef whose output is [B, T, E]


class Matcher:
    """Matches one attention, anchored at its Softmax; raises NoMatch or SkipMatch."""

    def __init__(self, view, info, softmax):
        self.view, self.info, self.softmax = view, info, softmax
        self.interior = {softmax.name}   # nodes the fused op replaces

    def match(self):
        scores, scale, mask = self._masked_scores(self._t(self.softmax.input[0]))
        query, key = self._scores(scores)
        weights, zero_masked = self._weights(mask)
        value, ctx, ctx_letters = self._context(weights)
        kernel, bias, final = self._output(ctx, ctx_letters, value)
        if query.heads != key.heads or query.width != key.width or value.heads != query.heads:
            raise SkipMatch(f"query, key and value projections disagree on heads: {query.heads}x{query.width}, "
                       f"{key.heads}x{key.width}, {value.heads}x{value.width}")
        if value.scale != 1.0:
            raise SkipMatch("the value projection is scaled")
        if mask is not None:
            self._check_mask_heads(mask, query.heads)
            self._shape_only(mask)
        self._check_private(final)
        return Attention(query, key, value, scale * query.scale * key.scale, mask, zero_masked, kernel, bias, final)

    # ---- Softmax input -> scores -----------------------------------------
    def _masked_scores(self, tensor):
        """(raw scores tensor, scale, Mask or None)."""
        node = self._producer(tensor)
        found = None
        if node is not None and node.op in _SELECT:
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

    # ---- contractions -----------------------------------------------------
    def _scores(self, tensor):
        """(query, key Projection) of the [B, N, T, S] scores."""
        tensor, roles = self._through_transposes(tensor, _B + _N + _T + _S)
        node = self._producer(tensor)
        ins, out = self._contraction(node)
        if len(out) != 4:
            raise NoMatch()
        self.interior.add(node.name)
        rename = dict(zip(out, roles))
        by_role = {}
        for src, letters in (self._through_transposes(self._t(i), _renamed(x, rename))
                             for i, x in zip(node.input[:2], ins)):
            by_role["q" if _T in letters else "k" if _S in letters else None] = (src, letters)
        if set(by_role) != {"q", "k"}:
            raise SkipMatch(f"'{node.name}': cannot tell the query from the key operand")
        (q_src, q_l), (k_src, k_l) = by_role["q"], by_role["k"]
        h = q_l[3]
        if q_l != _B + _T + _N + h or k_l != _B + _S + _N + h or h in roles:
            raise SkipMatch(f"'{node.name}': scores are not Q[b,t,n,h] . K[b,s,n,h] -> [b,n,t,s]")
        return self._projection(q_src), self._projection(k_src)

    def _weights(self, mask):
        """(attention weights node name, zero_masked): the Softmax, or Keras 3's
        where(mask, softmax, 0) after it on its explicit-scores path."""
        users = self.view.consumers(self.softmax.name)
        node = users[0][0] if len(users) == 1 else None
        if mask is None or mask.negate or node is None or node.op not in _SELECT:
            return self.softmax.name, False
        cond, a, b = (self._t(i) for i in self.view.data_inputs(node)[:3])
        if a != self._t(self.softmax.name) or self._pad(b) != 0.0:
            return self.softmax.name, False
        again = self._keep(cond, negate=False, mode=mask.mode, value=mask.value)
        if (again.tensor, again.squeeze, again.heads) != (mask.tensor, mask.squeeze, mask.heads):
            raise SkipMatch(f"'{node.name}' zeroes the weights with a different mask")
        self.interior.add(node.name)
        return node.name, True

    def _context(self, weights):
        """(value Projection, context tensor, its axes' roles) from the weights' one consumer."""
        users = self.view.consumers(weights)
        if len(users) != 1:
            raise SkipMatch(f"the attention weights '{weights}' have other uses (returned scores?)")
        node, port = users[0]
        ins, out = self._contraction(node)
        if len(out) != 4:
            raise SkipMatch(f"'{node.name}': weights are not contracted with the values")
        self.interior.add(node.name)
        rename = dict(zip(ins[port], _B + _N + _T + _S))
        extra = [c for c in ins[1 - port] if c not in ins[port]]
        if len(extra) != 1:
            raise SkipMatch(f"'{node.name}': the values do not have one feature axis")
        rename[extra[0]] = _HV
        v_src, v_l = self._through_transposes(self._t(node.input[1 - port]), _renamed(ins[1 - port], rename))
        out = _renamed(out, rename)
        if v_l != _B + _S + _N + _HV or sorted(out) != sorted(_B + _T + _N + _HV):
            raise SkipMatch(f"'{node.name}': context is not P[b,n,t,s] . V[b,s,n,h]")
        ctx, roles = self._forward_transposes(node.name, out)
        return self._projection(v_src), ctx, roles

    def _output(self, ctx, roles, value):
        users = self.view.consumers(parse_input(ctx)[0])
        if len(users) != 1:
            raise SkipMatch(f"the attention context '{ctx}' has other uses")
        node = users[0][0]
        if node.op == "Einsum":
            kernel, final = self._einsum_output(node, roles, value)
        elif node.op == "Reshape" and roles == _B + _T + _N + _HV:
            kernel, final = self._reshaped_output(node, value)
        else:
            raise SkipMatch(f"'{node.name}' ({node.op}) is not an output projection")
        bias, final = self._bias_after(final, kernel.shape[1])
        return kernel, bias, final

    def _einsum_output(self, node, roles, value):
        ins, out = self._contraction(node)
        w = self.view.const_value(node.input[1])
        if len(ins[0]) != 4 or w is None or w.ndim != 3:
            raise SkipMatch(f"'{node.name}': output projection is not Einsum(context, constant [N, Hv, E])")
        rename = dict(zip(ins[0], roles))
        w_l, out = _renamed(ins[1], rename), _renamed(out, rename)
        e = [c for c in w_l if c not in roles]
        if len(e) != 1 or out != _B + _T + e[0] or sorted(w_l) != sorted(_N + _HV + e[0]):
            raise SkipMatch(f"'{node.name}': output projection {ins} -> {out} does not contract heads and features")
        self.interior.add(node.name)
        w = np.transpose(w, [w_l.index(c) for c in _N + _HV + e[0]])
        return w.reshape(value.heads * value.width, w.shape[2]).astype(np.float32), node

    def _reshaped_output(self, reshape, value):
        dims, ctx_dims = self._dims(reshape.name), self._dims(reshape.input[0])
        nhv = value.heads * value.width
        if len(dims) != 3 or dims[2] != nhv or dims[1] is None or len(ctx_dims) != 4 or dims[1] != ctx_dims[1]:
            raise SkipMatch(f"'{reshape.name}' does not merge the heads into [B, T, N*Hv]")
        users = self.view.consumers(reshape.name)
        mm = users[0][0] if len(users) == 1 else None
        w = None if mm is None else self.view.const_value(mm.input[1])
        if mm is None or mm.op not in ("BatchMatMulV2", "BatchMatMul") or mm.attr["adj_x"].b or \
                mm.attr["adj_y"].b or w is None or w.shape[0] != nhv or w.ndim != 2:
            raise SkipMatch(f"'{reshape.name}': not followed by a product with a constant [N*Hv, E] kernel")
        self.interior.update({reshape.name, mm.name})
        return w.astype(np.float32), mm

    def _bias_after(self, node, width):
        users = self.view.consumers(node.name)
        if len(users) == 1 and users[0][0].op in _ADD:
            add = users[0][0]
            bias = self.view.const_value(add.input[1 - users[0][1]])
            if bias is not None and bias.shape == (width,):
                self.interior.add(add.name)
                return bias.astype(np.float32), add
        return np.zeros(width, np.float32), node

    # ---- projections ------------------------------------------------------
    def _projection(self, tensor):
        scale, tensor = self._scaled(tensor)
        dims = self._dims(tensor)
        if len(dims) != 4 or None in dims[2:]:
            raise SkipMatch(f"'{tensor}' is not a [B, L, N, H] projection with static N and H")
        heads, width = dims[2:]
        node = self._producer(tensor)
        bias = np.zeros(heads * width, np.float32)
        if node is not None and node.op in _ADD:
            found = self._const_operand(node)
            if found is not None and found[1].size == heads * width and found[1].shape[-2:] == (heads, width):
                tensor, bias = found[0], found[1].reshape(-1)
                node = self._producer(tensor)
        if node is not None and node.op == "Einsum":
            source, kernel = self._einsum_projection(node, heads, width)
        elif node is not None and node.op == "Reshape":
            source, kernel, pre_bias = self._reshaped_projection(node, heads, width)
            bias = bias + pre_bias
        else:
            raise SkipMatch(f"'{tensor}' is not a projection of a [B, L, d] input by a constant kernel")
        if self._dtype(source) != types_pb2.DT_FLOAT or len(self._dims(source)) != 3:
            raise SkipMatch(f"projection input '{source}' is not a float [B, L, d]")
        return Projection(source, kernel.astype(np.float32), bias.astype(np.float32), heads, width, scale)

    def _einsum_projection(self, node, heads, width):
        ins, out = self._contraction(node)
        w = self.view.const_value(node.input[1])
        if w is None or w.ndim != 3 or len(ins[0]) != 3 or len(out) != 4:
            raise SkipMatch(f"'{node.name}': not Einsum(input, constant [d, N, H])")
        x_b, x_l, x_c = ins[0]
        if out[:2] != x_b + x_l or x_c in out or sorted(ins[1]) != sorted(x_c + out[2:]):
            raise SkipMatch(f"'{node.name}': {ins} -> {out} is not a per-position projection")
        w = np.transpose(w, [ins[1].index(c) for c in x_c + out[2:]])
        return self._t(node.input[0]), w.reshape(w.shape[0], heads * width)

    def _reshaped_projection(self, reshape, heads, width):
        src = self._t(reshape.input[0])
        dims, src_dims = self._dims(reshape.name), self._dims(src)
        if len(src_dims) != 3 or src_dims[2] != heads * width or dims[1] is None or dims[1] != src_dims[1]:
            raise SkipMatch(f"'{reshape.name}' does not split [B, L, N*H] into [B, L, N, H]")
        node = self._producer(src)
        pre_bias = np.zeros(heads * width, np.float32)
        if node is not None and node.op in _ADD:
            found = self._const_operand(node)
            if found is not None and found[1].shape == (heads * width,):
                pre_bias, node = found[1], self._producer(found[0])
        w = None if node is None else self.view.const_value(node.input[1])
        if node is None or node.op not in ("BatchMatMulV2", "BatchMatMul") or node.attr["adj_x"].b or \
                node.attr["adj_y"].b or w is None or w.ndim != 2:
            raise SkipMatch(f"'{reshape.name}': not a reshaped product with a constant [d, N*H] kernel")
        return self._t(node.input[0]), w, pre_bias

    # ---- a mask made from the scores' shape --------------------------------
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

    # ---- checks -----------------------------------------------------------
    def _check_private(self, final):
        """Every intermediate the op replaces is used only inside the pattern."""
        for name in self.interior - {final.name}:
            if name in self.view.protected or self.view.control_consumers(name):
                raise SkipMatch(f"'{name}' is a model output or has control uses")
            for user, _ in self.view.consumers(name):
                if user.name not in self.interior:
                    raise SkipMatch(f"'{name}' is also used by '{user.name}'")

    # ---- helpers ----------------------------------------------------------
    def _contraction(self, node):
        """([letters of input 0, of input 1], output letters) of an Einsum or
        a rank-4 BatchMatMul; NoMatch for anything else."""
        if node is None:
            raise NoMatch()
        if node.op == "Einsum":
            eq = node.attr["equation"].s.decode().replace(" ", "")
            if "." in eq or "->" not in eq or eq.count(",") != 1:
                raise NoMatch()
            lhs, out = eq.split("->")
            return lhs.split(","), out
        if node.op in ("BatchMatMulV2", "BatchMatMul") and all(len(self._dims(i)) == 4 for i in node.input[:2]):
            x = "bnki" if node.attr["adj_x"].b else "bnik"
            y = "bnjk" if node.attr["adj_y"].b else "bnkj"
            return [x, y], "bnij"
        raise NoMatch()

    def _through_transposes(self, tensor, letters):
        """Back through Transposes: (source tensor, its axes' letters)."""
        while True:
            node = self._producer(tensor)
            perm = None if node is None or node.op != "Transpose" else self.view.const_value(node.input[1])
            if perm is None or len(perm) != len(letters):
                return tensor, letters
            source = [""] * len(letters)
            for i, p in enumerate(perm):
                source[int(p)] = letters[i]
            letters, tensor = "".join(source), self._t(node.input[0])
            self.interior.add(node.name)

    def _forward_transposes(self, name, letters):
        """Forward through single-use Transposes: (last tensor, its letters)."""
        while True:
            users = self.view.consumers(name)
            node = users[0][0] if len(users) == 1 else None
            perm = None if node is None or node.op != "Transpose" else self.view.const_value(node.input[1])
            if perm is None or len(perm) != len(letters):
                return name, letters
            letters = "".join(letters[int(p)] for p in perm)
            name = node.name
            self.interior.add(name)

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

    def _t(self, tensor):
        return self.view.source(tensor)

    def _producer(self, tensor):
        return self.view.node(self._t(tensor))

    def _dims(self, tensor):
        return shapes.shape_of(self.info, tensor) or []

    def _dtype(self, tensor):
        return shapes.dtype_of(self.info, self._t(tensor))


def _shape_dtype(shape_node):
    return np.int64 if shape_node.attr["out_type"].type == types_pb2.DT_INT64 else np.int32


def _renamed(letters, rename):
    return "".join(rename.get(c, c) for c in letters)
