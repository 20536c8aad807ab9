"""The one way passes build node attrs: plain Python values, converted by
the op's own OpDef.

`view.add_node("Cumsum", name, [x, axis], {"T": dtype, "Tidx": DT_INT32,
"exclusive": False})`: the OpDef says T is a type and exclusive a bool, so
an int DataType enum, a tf.DType, an int, a float, a str, a list or a
TensorShape each land in the right AttrValue field. An AttrValue passes
through unchanged. For an op this process has not registered (a Recopt op
before the library is loaded) the Python type decides: bool -> b, int -> i,
float -> f, str/bytes -> s, tf.DType -> type, lists by their first element;
a type attr of such an op must then be given as a tf.DType or AttrValue.
"""
import numbers

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import attr_value_pb2
from tensorflow.python.framework import op_def_registry


def build(op, values):
    """{name: AttrValue} for node op `op` from {name: Python value or AttrValue}."""
    op_def = op_def_registry.get(op)
    declared = {a.name: a.type for a in op_def.attr} if op_def is not None else {}
    try:
        return {key: _convert(value, declared.get(key)) for key, value in (values or {}).items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"attrs of a {op} node: {exc}") from exc


def set_attrs(node, values):
    """Sets (replaces) attrs of an existing NodeDef from Python values."""
    for key, value in build(node.op, values).items():
        node.attr[key].CopyFrom(value)


def _convert(value, kind):
    if isinstance(value, attr_value_pb2.AttrValue):
        return value
    if kind is None:
        kind = _infer(value)
    if kind.startswith("list("):
        item = kind[5:-1]
        field = _FIELDS[item]
        items = [_scalar(v, item) for v in value]
        return attr_value_pb2.AttrValue(list=attr_value_pb2.AttrValue.ListValue(**{field: items}))
    return attr_value_pb2.AttrValue(**{_FIELDS[kind]: _scalar(value, kind)})


_FIELDS = {"type": "type", "int": "i", "float": "f", "bool": "b", "string": "s", "shape": "shape",
           "tensor": "tensor", "func": "func"}


def _scalar(value, kind):
    if kind == "type":
        return tf.as_dtype(value).as_datatype_enum
    if kind == "int":
        if isinstance(value, float):
            raise TypeError(f"{value!r} is not an int")
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        return bool(value)
    if kind == "string":
        return value.encode() if isinstance(value, str) else bytes(value)
    if kind == "shape":
        return tf.TensorShape(value).as_proto()
    return value


def _infer(value):
    if isinstance(value, (list, tuple)):
        return "list(int)" if not value else f"list({_infer(value[0])})"
    if isinstance(value, tf.DType):
        return "type"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, numbers.Integral):
        return "int"
    if isinstance(value, numbers.Real):
        return "float"
    if isinstance(value, (str, bytes)):
        return "string"
    if isinstance(value, tf.TensorShape):
        return "shape"
    raise TypeError(f"no attr kind for {type(value).__name__} {value!r}")
