"""One loaded version of one model: its signatures, their input contracts,
and the call into TensorFlow. Knows nothing about requests or transports."""
import os
import threading
from typing import Dict

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from tf_recopt.serving import status

DEFAULT_SIGNATURE = "serving_default"


class Signature:
    """A signature's callable plus the checks TF Serving applies before it
    runs one: input names, dtypes and shapes."""

    def __init__(self, model_name, name, fn):
        self.model_name = model_name
        self.name = name
        self._fn = fn
        self.inputs: Dict[str, tf.TensorSpec] = dict(fn.structured_input_signature[1])
        self.outputs = sorted(fn.structured_outputs)

    @property
    def batchable(self):
        """Every input has an unknown leading (batch) dimension."""
        return bool(self.inputs) and all(
            s.shape.rank and s.shape[0] is None for s in self.inputs.values())

    def check(self, feeds: Dict[str, np.ndarray]):
        extra = sorted(set(feeds) - set(self.inputs))
        missing = sorted(set(self.inputs) - set(feeds))
        if extra or missing:
            raise status.invalid_argument(
                f"Request inputs do not match required inputs for model `{self.model_name}` "
                f"signature `{self.name}`. Send extra: {{{', '.join(extra)}}}. "
                f"Missing but required: {{{', '.join(missing)}}}.")
        for key, value in feeds.items():
            spec = self.inputs[key]
            if tf.as_dtype(value.dtype) != spec.dtype and not (spec.dtype == tf.string and value.dtype.kind in "OSU"):
                raise status.invalid_argument(
                    f"input `{key}` of signature `{self.name}` expects dtype {spec.dtype.name}, "
                    f"got {tf.as_dtype(value.dtype).name if value.dtype.kind not in 'OSU' else 'string'}")
            if not spec.shape.is_compatible_with(value.shape):
                raise status.invalid_argument(
                    f"input `{key}` of signature `{self.name}` expects shape {_shape_str(spec.shape)}, "
                    f"got {list(value.shape)}")

    def run(self, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            out = self._fn(**{k: tf.convert_to_tensor(v, self.inputs[k].dtype) for k, v in feeds.items()})
        except tf.errors.OpError as exc:
            raise status.from_tf_error(exc) from None
        return {k: v.numpy() for k, v in out.items()}


def _shape_str(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]" if shape.rank is not None \
        else "<unknown>"


class Servable:
    """tf.saved_model.load of one version directory. `acquire`/`release`
    count requests in flight so an unload waits for them to finish."""

    def __init__(self, name, version, path, tags=("serve",)):
        self.name = name
        self.version = int(version)
        self.path = path
        self._model = tf.saved_model.load(path, tags=list(tags))
        self.signature_defs = _signature_defs(path, set(tags))
        self._signatures = {k: Signature(name, k, fn) for k, fn in self._model.signatures.items()}
        self._in_flight = 0
        self._idle = threading.Condition()

    def signature(self, key) -> Signature:
        sig = self._signatures.get(key or DEFAULT_SIGNATURE)
        if sig is None:
            raise status.failed_precondition(
                f"Serving signature key \"{key}\" not found in model `{self.name}` version {self.version}; "
                f"it has: {', '.join(sorted(self._signatures))}")
        return sig

    def acquire(self):
        with self._idle:
            self._in_flight += 1

    def release(self):
        with self._idle:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def wait_idle(self, timeout=None):
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)


def _signature_defs(path, tags):
    """SignatureDefs as written (GetModelMetadata returns these, not the
    Python function specs)."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    for meta in proto.meta_graphs:
        if set(meta.meta_info_def.tags) == tags:
            return dict(meta.signature_def)
    return dict(proto.meta_graphs[0].signature_def) if proto.meta_graphs else {}
