"""Classify and Regress: tf.Example inputs (the Input proto or REST
"examples"/"context") fed to a signature taking serialized examples, and its
outputs read back as TF Serving's classifier.cc / regressor.cc do."""
import base64
import binascii

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, regression_pb2

from tf_recopt.serving import status

INPUTS, CLASSES, SCORES, OUTPUTS = "inputs", "classes", "scores", "outputs"


def serialized_from_input(input_proto):
    """Serialized examples; a context is merged into each example the way
    protobuf merges concatenated messages (example fields win)."""
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples, context = input_proto.example_list.examples, b""
    elif kind == "example_list_with_context":
        examples = input_proto.example_list_with_context.examples
        context = input_proto.example_list_with_context.context.SerializeToString()
    else:
        raise status.invalid_argument("Input is empty: set example_list or example_list_with_context")
    if not examples:
        raise status.invalid_argument("Input is empty: the example list has no examples")
    return np.array([context + e.SerializeToString() for e in examples], dtype=object)


def serialized_from_json(body):
    if not isinstance(body, dict) or not isinstance(body.get("examples"), list) or not body["examples"]:
        raise status.invalid_argument("JSON request must have a non-empty 'examples' list of objects")
    context = _example(body["context"], "context").SerializeToString() if body.get("context") else b""
    return np.array([context + _example(e, f"examples[{i}]").SerializeToString()
                     for i, e in enumerate(body["examples"])], dtype=object)


def _example(obj, where):
    if not isinstance(obj, dict):
        raise status.invalid_argument(f"{where} must be a JSON object of feature name -> value(s)")
    example = tf.train.Example()
    for name, value in obj.items():
        _fill_feature(example.features.feature[name], value if isinstance(value, list) else [value],
                      f"{where}.{name}")
    return example


def _fill_feature(feature, values, where):
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        feature.int64_list.value.extend(values)
    elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        feature.float_list.value.extend(values)
    elif all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in values):
        feature.bytes_list.value.extend(_bytes(v, where) for v in values)
    else:
        raise status.invalid_argument(f"{where}: a feature holds numbers or strings (or {{\"b64\": ...}}), "
                                      f"not a mix or nested lists: {values!r}")


def _bytes(value, where):
    if isinstance(value, str):
        return value.encode("utf-8")
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, TypeError, ValueError) as exc:
        raise status.invalid_argument(f"{where}: malformed base64: {exc}") from None


def check_signature(sig, method):
    """The input/output contract TF Serving requires of a classify or
    regress signature (its method-name check is off by default)."""
    if set(sig.inputs) != {INPUTS} or sig.inputs[INPUTS].dtype != tf.string:
        raise status.invalid_argument(
            f"signature `{sig.name}` cannot serve {method}: it needs exactly one string input named "
            f"`{INPUTS}` (serialized tf.Examples); it has {', '.join(sorted(sig.inputs)) or 'none'}")
    wanted = {CLASSES, SCORES} if method == "classify" else {OUTPUTS}
    if not wanted & set(sig.outputs):
        raise status.invalid_argument(
            f"signature `{sig.name}` cannot serve {method}: its outputs ({', '.join(sig.outputs)}) contain none "
            f"of {', '.join(sorted(wanted))}")


def classification_result(outputs, n):
    scores, classes = outputs.get(SCORES), outputs.get(CLASSES)
    for key, value in ((SCORES, scores), (CLASSES, classes)):
        if value is not None and (value.ndim != 2 or value.shape[0] != n):
            raise status.invalid_argument(
                f"Expected output `{key}` of shape [batch_size={n}, num_classes], got {list(value.shape)}")
    result = classification_pb2.ClassificationResult()
    width = (scores if scores is not None else classes).shape[1]
    for i in range(n):
        row = result.classifications.add()
        for j in range(width):
            cls = row.classes.add()
            if classes is not None:
                cls.label = classes[i, j].decode("utf-8", "replace") if isinstance(classes[i, j], bytes) \
                    else str(classes[i, j])
            if scores is not None:
                cls.score = float(scores[i, j])
    return result


def regression_result(outputs, n):
    value = outputs[OUTPUTS]
    if value.ndim == 2 and value.shape[1] == 1:
        value = value[:, 0]
    if value.ndim != 1 or value.shape[0] != n:
        raise status.invalid_argument(
            f"Expected output `{OUTPUTS}` of shape [batch_size={n}] or [batch_size, 1], got {list(value.shape)}")
    result = regression_pb2.RegressionResult()
    for v in value:
        result.regressions.add().value = float(v)
    return result


def classification_json(result):
    return {"results": [[[c.label, c.score] for c in row.classes] for row in result.classifications]}


def regression_json(result):
    return {"results": [r.value for r in result.regressions]}
