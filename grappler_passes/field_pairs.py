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


def products_shape(info, tensor, name):
    """(P, d) of a [B, P, d] pair-product tensor with static P and d, else SkipMatch."""
    shape = shapes.shape_of(info, tensor)
    if shape is None or len(shape) != 3 or shape[1] is None or shape[2] is None:
        raise SkipMatch(f"the pair products '{name}' are not [B, P, d] with static P and d")
    return shape[1], shape[2]


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


# ---- fields as [B, d] rows (FwFM and FEFM slice one per pair) --------------
def row_field(view, info, tensor, dim):
    """A [B, dim] field: ("slice", x, k) when it is x[:, k, :] of a [B, F, dim]
    x (a k:k+1 StridedSlice then Squeeze([1]), or a shrinking one), else
    ("tensor", t). FwFM slices the fields anew for every pair, so two slices
    of one field are different nodes but the same key."""
    t = view.source(tensor)
    shape = shapes.shape_of(info, t)
    if shape is None or len(shape) != 2 or shape[1] != dim:
        raise SkipMatch(f"'{t}' is not one field [B, {dim}]")
    node = view.node(parse_input(view.skip_identity(t))[0])
    shrunk = node is not None and node.op == "StridedSlice"
    if node is not None and node.op == "Squeeze" and list(node.attr["squeeze_dims"].list.i) in ([1], [-2]):
        node = view.node(parse_input(view.skip_identity(node.input[0]))[0])
        shrunk = False
    if node is not None and node.op == "StridedSlice":
        k = _field_index(view, info, node, shrunk, dim)
        if k is not None:
            return ("slice", view.source(node.input[0]), k)
    return ("tensor", t)


def _field_index(view, info, node, shrunk, dim):
    """k when `node` is x[:, k:k+1, :] (shrunk: x[:, k, :]) of a [B, F, dim] x, else None."""
    x_shape = shapes.shape_of(info, node.input[0])
    begin, end, strides = (view.const_value(t) for t in node.input[1:4])
    if x_shape is None or len(x_shape) != 3 or x_shape[1] is None or x_shape[2] != dim:
        return None
    if begin is None or end is None or strides is None or len(begin) != 3 or list(strides) != [1, 1, 1]:
        return None
    a = {name: node.attr[name].i for name in ("begin_mask", "end_mask", "ellipsis_mask", "new_axis_mask",
                                              "shrink_axis_mask")}
    if a["ellipsis_mask"] or a["new_axis_mask"] or a["shrink_axis_mask"] != (2 if shrunk else 0):
        return None
    for axis in (0, 2):  # whole: masked, or 0 to at least the size
        if not (a["begin_mask"] >> axis & 1 or begin[axis] == 0):
            return None
        if not (a["end_mask"] >> axis & 1 or (axis == 2 and end[axis] >= dim)):
            return None
    k = int(begin[1]) + (x_shape[1] if begin[1] < 0 else 0)
    if a["begin_mask"] & 2 or not 0 <= k < x_shape[1]:
        return None
    if not shrunk and (a["end_mask"] & 2 or int(end[1]) - int(begin[1]) != 1):
        return None
    return k


def index_row_fields(left, right):
    """(stack, rows, cols) for pairs of row_field keys: stack is ("x", x)
    when every key slices one x (rows/cols are then its field indices), else
    ("pack", [distinct tensors]) for stack_row_fields."""
    keys = list(left) + list(right)
    sources = {key[1] for key in keys if key[0] == "slice"}
    if len(sources) == 1 and all(key[0] == "slice" for key in keys):
        return ("x", sources.pop()), [k[2] for k in left], [k[2] for k in right]
    distinct = list(dict.fromkeys(keys))
    position = {key: i for i, key in enumerate(distinct)}
    return ("pack", distinct), [position[k] for k in left], [position[k] for k in right]


def stack_row_fields(view, stack, name, device=""):
    """The [B, F, d] tensor for index_row_fields' stack."""
    kind, value = stack
    if kind == "x":
        return value
    parts = []
    for i, key in enumerate(value):
        if key[0] == "tensor":
            parts.append(key[1])
            continue
        begin = view.add_const(f"{name}/field{i}_begin", np.array([0, key[2], 0], np.int32)).name
        size = view.add_const(f"{name}/field{i}_size", np.array([-1, 1, -1], np.int32)).name
        parts.append(view.add_node("Slice", f"{name}/field{i}", [key[1], begin, size],
                                   {"T": types_pb2.DT_FLOAT, "Index": types_pb2.DT_INT32}, device=device).name)
        squeeze = view.add_node("Squeeze", f"{name}/field{i}_row", [parts[-1]],
                                {"T": types_pb2.DT_FLOAT, "squeeze_dims": [1]}, device=device)
        parts[-1] = squeeze.name
    return view.add_node("Pack", name, parts, {"N": len(parts), "T": types_pb2.DT_FLOAT, "axis": 1},
                         device=device).name
