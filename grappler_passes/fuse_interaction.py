r"""DLRM dot interaction -> Recopt>DotInteraction (only the kept dot products
are computed; the [B, F, F] Gram matrix is never written):

       x [B, F, d]
       |        \
       |   Transpose(x, [0, 2, 1])     or BatchMatMulV2(x, x, adj_y=True),
       |        /                         or Einsum "bfd,bgd->bfg"
     BatchMatMulV2                     [B, F, F]
           |
     Reshape [-1, F*F]
           |
     GatherV2(indices, axis=1)         indices: a Const, or Keras' negative-index
                                       wrap SelectV2(c < 0, c + n, c) of a Const c

The gather node is rewritten in place (same name), or, when its one use is
DLRM's concat([dense, interactions], axis=1) (either order), the concat is,
with the dense features as the op's second input; the matmul, reshape,
transpose and index wrap are left for prune_dead_nodes.

The second form is tensorflow-recommenders' DotInteraction (and the Model
Garden DLRM that uses it): the triangle is a boolean_mask whose mask is a
band of ones_like(x x^T), so it is the same for every example:

   P = x x^T [B, F, F] --- OnesLike --- MatrixBandPart(lo, hi) [-> Sub(ones, band)]
        |                                  [-> Cast] -> Reshape [-1] -> Where -> Squeeze
     Reshape [-1]                                                          |
        |                                                                  |
     GatherV2(axis 0) <----------------------------------------------------'
        |
     Reshape [B, m]   rewritten in place; F is the size whose band keeps m entries

The third is DotInteraction(skip_gather=True), the Model Garden DLRM's
setting: all F*F entries, the masked-out triangle zeroed instead of dropped,

   SelectV2(Cast(mask), ZerosLike(P), P) -> Reshape [B, F*F]   (mask as above)

rewritten in place with -1 (a zero column) at each masked-out entry. When
the result feeds only a MatMul by a constant (the top MLP's first kernel), the
zero columns are dropped from the op and their rows from the kernel instead.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

import custom_ops.spec as spec
from grappler_passes import shapes
from grappler_passes.pass_base import GraphPass, SkipMatch
from grappler_passes.pattern import P, match, require

_BMM = "BatchMatMulV2|BatchMatMul"
_PRODUCTS = _BMM + "|Einsum"


def _adjoints(adj_y):
    def check(node, view):
        if node.attr["T"].type != types_pb2.DT_FLOAT:
            return f"the product '{node.name}' is not float32"
        if node.attr["adj_x"].b:
            return f"adj_x is set on '{node.name}'"
        if node.attr["adj_y"].b != adj_y:
            return f"adj_y is {'not ' if adj_y else ''}set on '{node.name}'"
        return None
    return check


def _gram_equation(node, view):
    """None for "bfd,bgd->bfg" in any letters, else why not."""
    eq = node.attr["equation"].s.decode().replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    ins = lhs.split(",")
    ok = len(ins) == 2 and len(rhs) == 3 and all(len(s) == 3 for s in ins) and \
        ins[0][0] == ins[1][0] == rhs[0] and ins[0][2] == ins[1][2] and rhs[1:] == ins[0][1] + ins[1][1] \
        and len(set(rhs + ins[0][2])) == 4
    if not ok:
        return f"einsum '{eq}' is not x x^T"
    return None if node.attr["T"].type == types_pb2.DT_FLOAT else f"the product '{node.name}' is not float32"


def _swaps_last_two(node, view):
    if np.array_equal(view.const_value(node.input[1]), [0, 2, 1]):
        return None
    return f"the product's right side '{node.name}' is not transpose(x, [0, 2, 1])"


# x x^T, the Gram matrix of the feature embeddings x [B, F, d].
_X = P("*", "x", keep=True)
GRAM = (P(_BMM, "product", [_X, P("Transpose", "transpose", [_X, None], check=_swaps_last_two)],
          check=_adjoints(adj_y=False)),
        P(_BMM, "product", [_X, _X], check=_adjoints(adj_y=True)),
        P("Einsum", "product", [_X, _X], check=_gram_equation))
# The anchors: a gather from the flattened Gram matrix, or a select of it.
_GATHER = P("GatherV2", "gather", [P("Reshape", "reshape", [P(_PRODUCTS, "product"), None]), None, None])
_SELECTS = (P("SelectV2", inputs=[None, P(_PRODUCTS)]), P("SelectV2", inputs=[None, None, P(_PRODUCTS)]))
# Keras' negative-index wrap of a constant c: SelectV2(c < 0, c + n, c).
_C = P("Const", "c", keep=True)
_ZERO = P("*", pred=lambda n, view: view.const_int(n.name) == 0, why="'{node}' is not 0")
KERAS_WRAP = P("SelectV2", "wrap", [P("Less", "less", [_C, _ZERO]), P("AddV2|Add", "add", [_C, None]), _C])
# A flattened mask's nonzeros: Squeeze(Where(Reshape(mask, [-1])), [1]).
_MINUS_ONE = P("*", pred=lambda n, view: np.array_equal(view.const_value(n.name), [-1]), why="'{node}' is not [-1]")
NONZEROS = P("Squeeze", "squeeze", [P("Where", "where", [P("Reshape", "flat", [P("*", "mask"), _MINUS_ONE])])],
             pred=lambda n, view: list(n.attr["squeeze_dims"].list.i) in ([1], [-1]), why="'{node}' squeezes another axis")
# A band of ones_like(P) ([-> ones - band] [-> Cast]), P the bound Gram product.
_ONES = P("OnesLike", inputs=[P("*", "product")])
_BAND = P("MatrixBandPart", "band", [_ONES, P("*", "lo"), P("*", "hi")])
_COMPLEMENT = P("Sub", "complement", [_ONES, _BAND])
BAND_MASKS = (P("Cast", inputs=[_COMPLEMENT]), P("Cast", inputs=[_BAND]), _COMPLEMENT, _BAND)
# skip_gather's select: zeros_like(P) where the mask holds, P elsewhere (or the other way round).
_GRAM_NODE = P(_PRODUCTS, "product")
ZEROED = (P("SelectV2", "select", [P("*", "mask"), P("ZerosLike", "zeros_first", [_GRAM_NODE]), _GRAM_NODE]),
          P("SelectV2", "select", [P("*", "mask"), _GRAM_NODE, P("ZerosLike", "zeros_last", [_GRAM_NODE])]))


class FuseInteraction(GraphPass):
    name = "fuse_interaction"
    requires_custom_ops = True
    gpu_kernels = False  # CPU kernel only so far
    description = "x @ x^T -> reshape -> gather(const) -> Recopt>DotInteraction"

    def run(self, ctx, result):
        view = ctx.view
        found = [n for n in view.nodes() if self._form(view, n)]
        if not found:
            return  # spares the shape inference of the whole graph
        info = view.tensor_info()
        for node in found:
            try:
                match = self._form(view, node)(view, info, node)
            except SkipMatch as why:
                result.skip(node.name, str(why))
                continue
            match.emit(info)
            result.apply()

    @staticmethod
    def _form(view, node):
        """The matcher class for a gather or select reading x x^T, else None."""
        if any(match(p, node, view) for p in _SELECTS):
            return _ZeroedInteraction
        if match(_GATHER, node, view) is None:
            return None
        return _MaskedInteraction if view.const_int(node.input[2]) == 0 else _Interaction


class _Interaction:
    def __init__(self, view, info, gather):
        self.view, self.gather = view, gather
        if gather.attr["batch_dims"].i != 0 or view.const_int(gather.input[2]) not in (1, -1):
            raise SkipMatch("not a gather along axis 1")
        # Keras' index wrap reads Shape(reshape): that use dies with the gather.
        self.reshape = self._single_use(gather.input[0], gather, also=("Shape",))
        self.product = self._single_use(self.reshape.input[0], self.reshape)
        self.x = self._gram_operand()
        x_shape = shapes.shape_of(info, self.x)
        if x_shape is None or len(x_shape) != 3 or x_shape[1] is None:
            raise SkipMatch(f"'{self.x}' is not [B, F, d] with a static F")
        self.f = x_shape[1]
        out = shapes.shape_of(info, self.reshape.name)
        if out is None or len(out) != 2 or out[1] != self.f * self.f:
            raise SkipMatch(f"reshape '{self.reshape.name}' does not flatten [F, F] = [{self.f}, {self.f}]")
        self.indices = self._indices(gather.input[1])

    def _single_use(self, tensor, consumer, also=()):
        """The producer of `tensor` if `consumer` (or ops in `also`) alone use it."""
        node = self.view.node(self.view.skip_identity(tensor))
        others = [c.name for c, _ in self.view.consumers(node.name) if c.name != consumer.name and c.op not in also]
        if node.name in self.view.protected or others:
            raise SkipMatch(f"'{node.name}' is used elsewhere")
        if self.view.has_control_inputs(node):
            raise SkipMatch(f"'{node.name}' has control inputs")
        return node

    def _gram_operand(self):
        """x when the product is x @ x^T."""
        return require(GRAM, self.product, self.view).tensors["x"]

    def _indices(self, tensor):
        value = self.view.const_value(tensor)
        if value is None:
            value = self._keras_wrapped(tensor)
        value = np.asarray(value)
        if value.ndim != 1 or value.dtype.kind not in "iu":
            raise SkipMatch("indices are not a 1-D integer constant")
        n = self.f * self.f
        value = np.where(value < 0, value + n, value)
        if value.size and (value.min() < 0 or value.max() >= n):
            raise SkipMatch(f"indices outside [0, {n})")
        return [int(v) for v in value]

    def _keras_wrapped(self, tensor):
        """c from SelectV2(Less(c, 0), AddV2(c, n), c); wrapping by n = F*F is
        what the gather's own axis length makes it."""
        node = self.view.node(self.view.skip_identity(tensor))
        m = match(KERAS_WRAP, node, self.view) if node is not None else None
        if m is None:
            raise SkipMatch("indices are neither a constant nor Keras' wrap of one")
        return self.view.const_value(m.tensors["c"])

    def emit(self, info):
        self._rewrite(self.gather, info)

    def _rewrite(self, g, info):
        """The op in place of g, or of the [dense, g] / [g, dense] concat after
        it. The product, reshape, transpose, index wrap (and g, when the concat
        takes the op) are then unused: prune_dead_nodes removes them."""
        target, dense, dense_first = self._dense_concat(g, info)
        if -1 in self.indices:
            self._elide_zero_columns(target, shapes.shape_of(info, dense)[1] if dense else 0, dense_first)
        self.view.rewrite(target, spec.DOT_INTERACTION, [self.x] + ([dense] if dense else []), {
            "num_features": self.f,
            "indices": list(self.indices),
            "num_dense": 1 if dense else 0,
            "dense_first": dense_first})

    def _elide_zero_columns(self, target, k, dense_first):
        """skip_gather's zero columns, when `target` feeds only MatMul(target, W)
        with W constant (a frozen top-MLP kernel): they add nothing to the
        product, so the op leaves them out and W loses their rows, which
        shrinks the first top layer (793 -> 415 rows for F = 27 and k = 64).
        A W with Inf or NaN in a zero column's row keeps the columns (0 * Inf
        is NaN in the original)."""
        view = self.view
        users = view.consumers(target.name)
        if target.name in view.protected or len(users) != 1 or view.control_consumers(target.name) or k is None:
            return
        matmul, index = users[0]
        w = view.const_value(matmul.input[1]) if matmul.op == "MatMul" and index == 0 else None
        pairs = np.array(self.indices) != -1
        keep = np.concatenate([np.ones(k, bool), pairs] if dense_first else [pairs, np.ones(k, bool)])
        if w is None or matmul.attr["transpose_a"].b or matmul.attr["transpose_b"].b or w.ndim != 2 \
                or w.shape[0] != keep.size or not np.isfinite(w[~keep]).all():
            return
        kernel = view.add_const(f"{matmul.name}/recopt_nonzero_rows", w[keep])
        matmul.input[1] = kernel.name
        self.indices = [i for i in self.indices if i != -1]
        view.touch()

    def _dense_concat(self, g, info):
        """(concat node, dense tensor, dense first?) for DLRM's concat of the
        dense features with the interactions along axis 1, else (g, None, True)."""
        view = self.view
        users = view.consumers(g.name)
        if g.name in view.protected or len(users) != 1 or view.control_consumers(g.name):
            return g, None, True
        concat, index = users[0]
        if concat.op != "ConcatV2" or concat.attr["N"].i != 2 or view.const_int(concat.input[2]) not in (1, -1):
            return g, None, True
        dense = view.skip_identity(concat.input[1 - index])
        dims = shapes.shape_of(info, dense)
        if dims is None or len(dims) != 2 or shapes.dtype_of(info, dense) != types_pb2.DT_FLOAT or dense == g.name:
            return g, None, True
        return concat, dense, index == 1


class _MaskedInteraction(_Interaction):
    """The boolean_mask form (module docstring); rewrites the final Reshape."""

    def __init__(self, view, info, gather):
        self.view, self.gather = view, gather
        if gather.attr["batch_dims"].i != 0:
            raise SkipMatch("a batched gather")
        consumers = view.consumers(gather.name)
        if len(consumers) != 1 or consumers[0][0].op != "Reshape" or view.has_control_inputs(gather):
            raise SkipMatch("the masked gather is not reshaped to [B, m] alone")
        self.out = consumers[0][0]
        out_shape = shapes.shape_of(info, self.out.name)
        if out_shape is None or len(out_shape) != 2 or out_shape[1] is None:
            raise SkipMatch(f"'{self.out.name}' is not [B, m] with a static m")
        anchor = require(_GATHER, gather, view)
        flat, self.product = anchor["reshape"], anchor["product"]
        flat_shape = shapes.shape_of(info, flat.name)
        if flat_shape is None or len(flat_shape) != 1:
            raise SkipMatch(f"'{flat.name}' does not flatten the Gram matrix")
        self.x = self._gram_operand()
        keep = self._band_mask(gather.input[1])
        self.f = _features_keeping(keep, out_shape[1])
        self.indices = [int(i) for i in np.flatnonzero(keep(self.f))]

    def _band_mask(self, tensor):
        """keep(F) -> [F, F] bool, from Squeeze(Where(Reshape(mask, [-1])))."""
        view = self.view
        m = match(NONZEROS, view.node(view.skip_identity(tensor)), view)
        if m is None:
            raise SkipMatch("indices are not a flattened mask's nonzeros")
        return _band_of_ones(view, m.tensors["mask"], self.product.name)

    def emit(self, info):
        self._rewrite(self.out, info)


class _ZeroedInteraction(_Interaction):
    """The skip_gather form (module docstring); rewrites the final Reshape."""

    def __init__(self, view, info, select):
        self.view = view
        users = view.consumers(select.name)
        if len(users) != 1 or users[0][0].op != "Reshape" or view.control_consumers(select.name) \
                or select.name in view.protected:
            raise SkipMatch("the select is not reshaped to [B, F*F] alone")
        self.out = users[0][0]
        m = require(ZEROED, select, view)
        self.product, zeros_first = m["product"], "zeros_first" in m.nodes
        self.x = self._gram_operand()
        out_shape = shapes.shape_of(info, self.out.name)
        f = int(np.sqrt(out_shape[1])) if out_shape is not None and len(out_shape) == 2 and out_shape[1] else 0
        if f * f != (out_shape[1] if f else -1):
            raise SkipMatch(f"'{self.out.name}' is not [B, F*F] with a static F")
        self.f = f
        keep = _band_of_ones(view, m.tensors["mask"], self.product.name)(f)
        if zeros_first:
            keep = ~keep   # the zeros are taken where the mask is true
        self.indices = [i if k else -1 for i, k in enumerate(keep.ravel())]

    def emit(self, info):
        self._rewrite(self.out, info)


def _band_of_ones(view, tensor, product):
    """keep(F) -> [F, F] bool for a mask [Cast] band_part(ones_like(P), lo, hi),
    or its complement ones_like(P) - band, P being the product `product`."""
    mask = view.node(view.skip_identity(tensor))
    if mask is None:
        raise SkipMatch("the mask is not a band of ones_like(x x^T)")
    m = require(BAND_MASKS, mask, view, bound={"product": product})
    complement = "complement" in m.nodes
    lo, hi = view.const_int(m.tensors["lo"]), view.const_int(m.tensors["hi"])
    if lo is None or hi is None:
        raise SkipMatch("the band's bounds are not constants")

    def keep(f):
        i, j = np.indices((f, f))
        inside = ((lo < 0) | (i - j <= lo)) & ((hi < 0) | (j - i <= hi))
        return ~inside if complement else inside
    return keep


def _features_keeping(keep, m, limit=512):
    """The F whose mask keeps m entries (the count grows with F)."""
    for f in range(1, limit + 1):
        count = int(keep(f).sum())
        if count == m:
            return f
        if count > m:
            break
    raise SkipMatch(f"no feature count gives {m} masked entries")
