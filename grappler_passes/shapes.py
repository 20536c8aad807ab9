"""Static shapes and dtypes of a GraphDef's tensors, from TensorFlow's own
shape inference (the graph is imported into a scratch tf.Graph)."""
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2
from tensorflow.python.framework import op_def_registry

import custom_ops.spec as spec

# Hash-table lookups (StringLookup, IntegerLookup, tf.lookup.StaticHashTable)
# infer their output shape from the table handle's shape data, which a
# converted signature loses: the handle arrives as a plain resource
# Placeholder, so the lookup and everything after it would be unknown rank.
_TABLE_LOOKUPS = frozenset({"LookupTableFindV2"})


def tensor_info(graph_def):
    """tensor name ("node:port") -> (dims list with None where unknown, or
    None for unknown rank; DataType enum). A graph that already holds
    tf-recopt ops (a re-optimised model) needs the op library loaded first:
    optimize() loads it; this layer never does (it sits below tf_recopt)."""
    _check_registered(graph_def)
    graph = _import(graph_def)
    stand_ins = _lookup_stand_ins(graph)
    if stand_ins:
        graph = _import(_with_stand_ins(graph_def, stand_ins))
    info = {}
    for op in graph.get_operations():
        for port, out in enumerate(op.outputs):
            shape = None if out.shape.rank is None else out.shape.as_list()
            info[f"{op.name}:{port}"] = (shape, out.dtype.as_datatype_enum)
    return info


def _check_registered(graph_def):
    unknown = sorted({n.op for n in graph_def.node if op_def_registry.get(n.op) is None})
    if unknown:
        node = next(n.name for n in graph_def.node if n.op == unknown[0])
        hint = " (call tf_recopt.load_ops() first)" if unknown[0].startswith(spec.PREFIX) else ""
        raise ValueError(f"node {node!r}: op {unknown[0]!r} is not registered{hint}; unregistered: {unknown}")


def _import(graph_def):
    with tf.Graph().as_default() as graph:
        tf.graph_util.import_graph_def(graph_def, name="")
    return graph


def _lookup_stand_ins(graph):
    """Names of table lookups whose output lost its shape although the
    table's values are scalars (the default value is one): such a lookup
    has exactly its keys' shape."""
    names = set()
    for op in graph.get_operations():
        if op.type not in _TABLE_LOOKUPS or op.outputs[0].shape.rank is not None:
            continue
        if op.inputs[2].shape.rank == 0:
            names.add(op.name)
    return names


def _with_stand_ins(graph_def, names):
    """A copy where each named lookup is Cast(keys) to the value type: the
    same shape and dtype, for shape inference only (never run)."""
    out = type(graph_def)()
    out.CopyFrom(graph_def)
    for node in out.node:
        if node.name not in names:
            continue
        keys, value_type = node.input[1], node.attr["Tout"].type
        key_type = node.attr["Tin"].type
        control = [i for i in node.input if i.startswith("^")]
        node.op = "Cast"
        del node.input[:]
        node.input.extend([keys] + control)
        node.attr.clear()
        node.attr["SrcT"].CopyFrom(attr_value_pb2.AttrValue(type=key_type))
        node.attr["DstT"].CopyFrom(attr_value_pb2.AttrValue(type=value_type))
    return out


def _key(tensor):
    return tensor if ":" in tensor else f"{tensor}:0"


def shape_of(info, tensor):
    """Dims of a tensor name (with or without ":0"); None if unknown."""
    return info.get(_key(tensor), (None, None))[0]


def dtype_of(info, tensor):
    return info.get(_key(tensor), (None, None))[1]
