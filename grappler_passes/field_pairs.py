"""Field-pair operands shared by the interaction passes (fuse_afm,
fuse_bilinear): which fields a [B, P, d] pair operand reads, and the one
[B, F, d] tensor the fused op takes them from.

DeepCTR builds pair operands from a Python list of [B, 1, d] fields
(`itertools.combinations`), so they reach the graph as ConcatV2 inputs or
as the operands of per-pair ops; hand-written models gather from one
[B, F, d] tensor with constant indices. Matchers only read; stack_fields is
the emit step.
"""
import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import shapes
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import SkipMatch


def field(view, info, tensor, dim):
    """`tensor`'s canonical name if it is one field [B, 1, dim], else SkipMatch."""
    t = view.source(tensor)
    shape = shapes.shape_of(info, t)
    if shape is None or len(shape) != 3 or shape[1:] != [1, dim]:
        raise SkipMatch(f"'{t}' is not one field [B, 1, {dim}]")
    return t


def gathered(view, info, tensor, dim):
    """("concat", [field tensors]) or ("gather", x, [field indices]) for a
    [B, P, dim] pair operand."""
    node = view.node(view.skip_identity(tensor))
    if node is None:
        raise SkipMatch(f"'{tensor}' has no producer")
    if node.op == "ConcatV2":
        if view.const_int(node.input[-1]) not in (1, -2):
            raise SkipMatch(f"'{node.name}' does not concatenate fields along axis 1")
        return ("concat", [field(view, info, t, dim) for t in view.data_inputs(node)[:-1]])
    if node.op == "GatherV2":
        x = view.skip_identity(node.input[0])
        x_shape = shapes.shape_of(info, x)
        indices = view.const_value(node.input[1])
        if node.attr["batch_dims"].i != 0 or view.const_int(node.input[2]) != 1 or indices is None:
            raise SkipMatch(f"'{node.name}' is not a gather of constant fields along axis 1")
        if x_shape is None or len(x_shape) != 3 or x_shape[1] is None or x_shape[2] != dim:
            raise SkipMatch(f"'{x}' is not [B, F, {dim}] with a static F")
        indices = [int(i) for i in np.asarray(indices).reshape(-1)]
        if any(not 0 <= i < x_shape[1] for i in indices):
            raise SkipMatch(f"'{node.name}' gathers a field outside [0, {x_shape[1]})")
        return ("gather", x, indices)
    raise SkipMatch(f"the pair operand '{node.name}' ({node.op}) is neither a concat of fields nor a gather")


def pair_fields(view, info, left, right, dim):
    """(x, rows, cols) for the pairs left[t] (x) right[t]: x a [B, F, dim]
    tensor, or the list of [B, 1, dim] field tensors stack_fields will stack."""
    a, b = (gathered(view, info, t, dim) for t in (left, right))
    if a[0] == "concat" and b[0] == "concat":
        return index_fields(a[1], b[1])
    if a[0] == "gather" and b[0] == "gather" and a[1] == b[1]:
        return a[1], a[2], b[2]
    raise SkipMatch("the two sides of the pair products do not read the same fields")


def index_fields(left, right):
    """(distinct fields in first-seen order, rows, cols) for per-pair field lists."""
    fields = list(dict.fromkeys(list(left) + list(right)))
    position = {t: i for i, t in enumerate(fields)}
    return fields, [position[t] for t in left], [position[t] for t in right]


def stack_fields(view, x, name, device=""):
    """The [B, F, d] tensor for pair_fields' x: x itself, the input of a
    Split along axis 1 whose outputs are exactly the fields in order
    (DeepCTR's SENET layer), or a new ConcatV2 of the fields."""
    if not isinstance(x, list):
        return x
    split = _split_source(view, x)
    if split is not None:
        return split
    axis = view.add_const(f"{name}_axis", np.int32(1))
    return view.add_node("ConcatV2", name, x + [axis.name],
                         {"N": len(x), "T": types_pb2.DT_FLOAT, "Tidx": types_pb2.DT_INT32}, device=device).name


def _split_source(view, fields):
    owners = {parse_input(t)[0] for t in fields}
    if len(owners) != 1:
        return None
    node = view.node(owners.pop())
    if node is None or node.op != "Split" or node.attr["num_split"].i != len(fields):
        return None
    if [parse_input(t)[1] for t in fields] != list(range(len(fields))) or view.const_int(node.input[0]) not in (1, -2):
        return None
    return view.source(node.input[1])
