"""TF Serving's REST JSON <-> numpy: the row ("instances") and columnar
("inputs") request formats, {"b64": ...} for bytes, and the matching
"predictions" / "outputs" responses (json_tensor.cc is the reference)."""
import base64
import binascii
from typing import Dict

import numpy as np
import tensorflow as tf

from tf_recopt.serving import status


def _is_b64(value):
    return isinstance(value, dict) and set(value) == {"b64"}


def _decode_b64(value, where):
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise status.invalid_argument(f"{where}: malformed base64 in {{\"b64\": ...}}: {exc}") from None


def _shape(value, where):
    """Shape of a rectangular nested list; a ragged one is an error."""
    if not isinstance(value, list):
        return ()
    if not value:
        return (0,)
    inner = _shape(value[0], where)
    for item in value[1:]:
        if _shape(item, where) != inner:
            raise status.invalid_argument(f"{where}: nested lists are not rectangular (ragged); "
                                          "all rows must have the same length")
    return (len(value),) + inner


def _leaves(value):
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def to_array(value, dtype: tf.DType, where) -> np.ndarray:
    """A JSON value as an array of `dtype`, refusing silent conversions
    (a float into an int input, a string into a number)."""
    shape = _shape(value, where)
    leaves = list(_leaves(value))
    if dtype == tf.string:
        out = np.empty(len(leaves), dtype=object)
        for i, leaf in enumerate(leaves):
            if _is_b64(leaf):
                out[i] = _decode_b64(leaf, where)
            elif isinstance(leaf, str):
                out[i] = leaf.encode("utf-8")
            else:
                raise status.invalid_argument(f"{where}: expects strings (or {{\"b64\": ...}}), got {leaf!r}")
        return out.reshape(shape)
    for leaf in leaves:
        _check_leaf(leaf, dtype, where)
    try:
        return np.asarray(value, dtype=dtype.as_numpy_dtype).reshape(shape)
    except (OverflowError, ValueError, TypeError) as exc:
        raise status.invalid_argument(f"{where}: cannot convert to {dtype.name}: {exc}") from None


def _check_leaf(leaf, dtype, where):
    if dtype == tf.bool:
        ok = isinstance(leaf, bool)
    elif dtype.is_integer:
        ok = isinstance(leaf, int) and not isinstance(leaf, bool)
    else:
        ok = isinstance(leaf, (int, float)) and not isinstance(leaf, bool)
    if not ok:
        raise status.invalid_argument(f"{where}: expects {dtype.name} values, got {leaf!r}")


def predict_feeds(body, inputs: Dict[str, tf.TensorSpec]):
    """(feeds, 'row'|'columnar') from a :predict request body."""
    if not isinstance(body, dict):
        raise status.invalid_argument("request body must be a JSON object")
    if ("instances" in body) == ("inputs" in body):
        raise status.invalid_argument("JSON request must have exactly one of 'instances' (row format) or "
                                      "'inputs' (columnar format)")
    if "instances" in body:
        return _row_feeds(body["instances"], inputs), "row"
    return _columnar_feeds(body["inputs"], inputs), "columnar"


def _named(value, inputs):
    """True when a value is a {input name: value} object rather than the
    value of a signature's single input."""
    return isinstance(value, dict) and not _is_b64(value) and (len(inputs) != 1 or set(value) <= set(inputs))


def _row_feeds(instances, inputs):
    if not isinstance(instances, list):
        raise status.invalid_argument("'instances' must be a JSON list with one entry per example")
    if not instances:
        raise status.invalid_argument("'instances' is empty: send at least one example")
    if not _named(instances[0], inputs):
        return _single_input(instances, inputs, "each instance")
    keys = set(instances[0])
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict) or set(inst) != keys:
            raise status.invalid_argument(
                f"instance {i} does not have the same input names as instance 0 ({', '.join(sorted(keys))})")
    _check_names(keys, inputs)
    return {k: to_array([inst[k] for inst in instances], inputs[k].dtype, f"input `{k}`") for k in keys}


def _columnar_feeds(value, inputs):
    if not _named(value, inputs):
        return _single_input(value, inputs, "'inputs'")
    _check_names(set(value), inputs)
    return {k: to_array(v, inputs[k].dtype, f"input `{k}`") for k, v in value.items()}


def _single_input(value, inputs, what):
    """Bare values are allowed only when the signature has one input."""
    if len(inputs) != 1:
        raise status.invalid_argument(
            f"the signature has {len(inputs)} inputs ({', '.join(sorted(inputs))}): {what} must be an object "
            "keyed by input name")
    (name, spec), = inputs.items()
    return {name: to_array(value, spec.dtype, f"input `{name}`")}


def _check_names(keys, inputs):
    unknown = sorted(set(keys) - set(inputs))
    if unknown:
        raise status.invalid_argument(
            f"input tensor alias not found in signature: {', '.join(unknown)}. Inputs expected to be in the "
            f"set {{{', '.join(sorted(inputs))}}}.")


def _json_value(array, name):
    if isinstance(array, (bytes, str)):  # a row of a 1-d string output
        return _json_bytes(array, name)
    array = np.asarray(array)  # (never bytes: numpy's S dtype drops trailing NULs)
    if array.dtype.kind in "OSU":
        flat = [_json_bytes(v, name) for v in array.reshape(-1)]
        return np.array(flat, dtype=object).reshape(array.shape).tolist() if array.ndim else flat[0]
    # NaN and Infinity are written bare, as TF Serving does (not strict JSON).
    return array.tolist()


def _json_bytes(value, name):
    value = value if isinstance(value, bytes) else str(value).encode("utf-8")
    if not name.endswith("_bytes"):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return {"b64": base64.b64encode(value).decode("ascii")}


def predict_response(outputs: Dict[str, np.ndarray], fmt):
    if fmt == "columnar":
        if len(outputs) == 1:
            (name, value), = outputs.items()
            return {"outputs": _json_value(value, name)}
        return {"outputs": {k: _json_value(v, k) for k, v in outputs.items()}}
    rows = {v.shape[0] if v.ndim else None for v in outputs.values()}
    if len(rows) != 1 or None in rows:
        raise status.invalid_argument(
            "outputs do not share a batch dimension ("
            + ", ".join(f"{k}: {list(v.shape)}" for k, v in outputs.items())
            + "); use the columnar format ('inputs') for this signature")
    if len(outputs) == 1:
        (name, value), = outputs.items()
        return {"predictions": [_json_value(row, name) for row in value]}
    n = rows.pop()
    return {"predictions": [{k: _json_value(v[i], k) for k, v in outputs.items()} for i in range(n)]}
