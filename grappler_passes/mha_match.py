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

from grappler_passes.graph_view import parse_input
from grappler_passes.mha_mask import ADD_OPS, AX_B, AX_HV, AX_N, AX_S, AX_T, SELECT, Mask, MaskReader
from grappler_passes.pass_base import NoMatch, SkipMatch


@dataclasses.dataclass
class Projection:
    source: str            # the [B, L, d] input
    kernel: np.ndarray     # [d, N * width]
    bias: np.ndarray       # [N * width]
    heads: int
    width: int
    scale: float           # a constant factor on the projection (tf_keras scales the query)


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


class ProjectionReader(MaskReader):
    """Contractions read as einsums over letters: the Q/K/V projections."""

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

    def _projection(self, tensor):
        scale, tensor = self._scaled(tensor)
        dims = self._dims(tensor)
        if len(dims) != 4 or None in dims[2:]:
            raise SkipMatch(f"'{tensor}' is not a [B, L, N, H] projection with static N and H")
        heads, width = dims[2:]
        node = self._producer(tensor)
        bias = np.zeros(heads * width, np.float32)
        if node is not None and node.op in ADD_OPS:
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
        if node is not None and node.op in ADD_OPS:
            found = self._const_operand(node)
            if found is not None and found[1].shape == (heads * width,):
                pre_bias, node = found[1], self._producer(found[0])
        w = None if node is None else self.view.const_value(node.input[1])
        if node is None or node.op not in ("BatchMatMulV2", "BatchMatMul") or node.attr["adj_x"].b or \
                node.attr["adj_y"].b or w is None or w.ndim != 2:
            raise SkipMatch(f"'{reshape.name}': not a reshaped product with a constant [d, N*H] kernel")
        return self._t(node.input[0]), w, pre_bias

    def _bias_after(self, node, width):
        users = self.view.consumers(node.name)
        if len(users) == 1 and users[0][0].op in ADD_OPS:
            add = users[0][0]
            bias = self.view.const_value(add.input[1 - users[0][1]])
            if bias is not None and bias.shape == (width,):
                self.interior.add(add.name)
                return bias.astype(np.float32), add
        return np.zeros(width, np.float32), node


class Matcher(ProjectionReader):
    """Matches one attention, anchored at its Softmax; raises NoMatch or SkipMatch."""

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

    def _scores(self, tensor):
        """(query, key Projection) of the [B, N, T, S] scores."""
        tensor, roles = self._through_transposes(tensor, AX_B + AX_N + AX_T + AX_S)
        node = self._producer(tensor)
        ins, out = self._contraction(node)
        if len(out) != 4:
            raise NoMatch()
        if any(getattr(self.view.node(self.view.skip_identity(t)), "op", None) == "Pack" for t in node.input[:2]):
            raise NoMatch()  # heads stacked on a new axis 0 (AutoInt's layer): fuse_autoint's form
        self.interior.add(node.name)
        rename = dict(zip(out, roles))
        by_role = {}
        for src, letters in (self._through_transposes(self._t(i), _renamed(x, rename))
                             for i, x in zip(node.input[:2], ins)):
            by_role["q" if AX_T in letters else "k" if AX_S in letters else None] = (src, letters)
        if set(by_role) != {"q", "k"}:
            raise SkipMatch(f"'{node.name}': cannot tell the query from the key operand")
        (q_src, q_l), (k_src, k_l) = by_role["q"], by_role["k"]
        h = q_l[3]
        if q_l != AX_B + AX_T + AX_N + h or k_l != AX_B + AX_S + AX_N + h or h in roles:
            raise SkipMatch(f"'{node.name}': scores are not Q[b,t,n,h] . K[b,s,n,h] -> [b,n,t,s]")
        return self._projection(q_src), self._projection(k_src)

    def _weights(self, mask):
        """(attention weights node name, zero_masked): the Softmax, or Keras 3's
        where(mask, softmax, 0) after it on its explicit-scores path."""
        users = self.view.consumers(self.softmax.name)
        node = users[0][0] if len(users) == 1 else None
        if mask is None or mask.negate or node is None or node.op not in SELECT:
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
        rename = dict(zip(ins[port], AX_B + AX_N + AX_T + AX_S))
        extra = [c for c in ins[1 - port] if c not in ins[port]]
        if len(extra) != 1:
            raise SkipMatch(f"'{node.name}': the values do not have one feature axis")
        rename[extra[0]] = AX_HV
        v_src, v_l = self._through_transposes(self._t(node.input[1 - port]), _renamed(ins[1 - port], rename))
        out = _renamed(out, rename)
        if v_l != AX_B + AX_S + AX_N + AX_HV or sorted(out) != sorted(AX_B + AX_T + AX_N + AX_HV):
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
        elif node.op == "Reshape" and roles == AX_B + AX_T + AX_N + AX_HV:
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
        if len(e) != 1 or out != AX_B + AX_T + e[0] or sorted(w_l) != sorted(AX_N + AX_HV + e[0]):
            raise SkipMatch(f"'{node.name}': output projection {ins} -> {out} does not contract heads and features")
        self.interior.add(node.name)
        w = np.transpose(w, [w_l.index(c) for c in AX_N + AX_HV + e[0]])
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


def _renamed(letters, rename):
    return "".join(rename.get(c, c) for c in letters)
