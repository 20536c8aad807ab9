"""One loaded version of one model: its signatures, their input contracts,
and the call into TensorFlow. Knows nothing about requests or transports."""
import threading
from typing import Dict

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from tf_recopt.serving import native, status
from tf_recopt.serving.native import shape_str

DEFAULT_SIGNATURE = "serving_default"


class Signature:
    """A SignatureDef run through the version's Session, as TF Serving runs
    it, plus the checks it applies first: input names, dtypes, shapes."""

    def __init__(self, model_name, name, sig_def, session=None, bundle=None):
        self.model_name = model_name
        self.name = name
        self.inputs: Dict[str, tf.TensorSpec] = {k: _spec(v) for k, v in sig_def.inputs.items()}
        self.outputs = sorted(sig_def.outputs)
        self._keys = sorted(self.inputs)
        # Batchable: every input has an unknown leading (batch) dimension.
        self.batchable = bool(self.inputs) and all(s.shape.rank and s.shape[0] is None for s in self.inputs.values())
        # Plain-Python contracts: TensorShape/DType comparisons cost ~15 us an input.
        self._expect = {k: (None if spec.dtype == tf.string else np.dtype(spec.dtype.as_numpy_dtype),
                            None if spec.shape.rank is None else tuple(spec.shape.as_list()))
                        for k, spec in self.inputs.items()}
        # A Session callable (TF_SessionRunCallable): feeds and fetches fixed
        # once, numpy in and out. Session.make_callable with feeds falls back to
        # Session.run's generic Python feed path: ~3 ms a call for 27 inputs.
        options = config_pb2.CallableOptions(feed=[sig_def.inputs[k].name for k in self._keys],
                                             fetch=[sig_def.outputs[k].name for k in self.outputs])
        if bundle is not None:
            self.native_call = native.Call(bundle, options, self._keys, self.inputs, self.outputs, model_name, name,
                                      self.batchable)
        else:
            self.native_call = None
            self._call = session._make_callable_from_options(options)  # pylint: disable=protected-access

    def check_names(self, keys):
        if keys != self.inputs.keys():
            extra = sorted(set(keys) - set(self.inputs))
            missing = sorted(set(self.inputs) - set(keys))
            raise status.invalid_argument(
                f"Request inputs do not match required inputs for model `{self.model_name}` "
                f"signature `{self.name}`. Send extra: {{{', '.join(extra)}}}. "
                f"Missing but required: {{{', '.join(missing)}}}.")

    def check(self, feeds: Dict[str, np.ndarray]):
        self.check_names(feeds.keys())
        for key, value in feeds.items():
            np_dtype, dims = self._expect[key]
            if not (value.dtype == np_dtype or (np_dtype is None and value.dtype.kind in "OSU")):
                got = "string" if value.dtype.kind in "OSU" else tf.as_dtype(value.dtype).name
                raise status.invalid_argument(f"input `{key}` of signature `{self.name}` expects dtype "
                                              f"{self.inputs[key].dtype.name}, got {got}")
            if dims is not None and (len(dims) != value.ndim or
                                     any(d is not None and d != n for d, n in zip(dims, value.shape))):
                raise status.invalid_argument(
                    f"input `{key}` of signature `{self.name}` expects shape {shape_str(self.inputs[key].shape)}, "
                    f"got {list(value.shape)}")

    def run(self, feeds: Dict[str, np.ndarray], batcher=None) -> Dict[str, np.ndarray]:
        """Outputs by name; `batcher` (a NativeBatcher) only on the C++ path."""
        if self.native_call is not None:
            return self.native_call.run(feeds, batcher)
        try:
            values = self._call(*[feeds[k] for k in self._keys])
        except tf.errors.OpError as exc:
            raise status.from_tf_error(exc) from None
        return dict(zip(self.outputs, values))


def _spec(info):
    if info.WhichOneof("encoding") != "name":
        raise ValueError(f"{info.WhichOneof('encoding')} (composite) signature tensors are not supported")
    return tf.TensorSpec(tf.TensorShape(info.tensor_shape), tf.as_dtype(info.dtype))


class Servable:
    """One version loaded into its own Session: by TensorFlow's C++ loader
    (TF Serving's SavedModelBundle) on the native path, else by the
    tf.compat.v1 loader. `acquire`/`release` count requests in flight so an
    unload waits for them to finish."""

    def __init__(self, name, version, path, tags=("serve",), session_config=None, use_native=False):
        self.name = name
        self.version = int(version)
        self.path = path
        self._bundle = self._session = None
        if use_native:
            self._bundle = native.Bundle(path, tags, session_config)
            self.signature_defs = dict(self._bundle.signature_defs)
        else:
            self._graph = tf.Graph()
            self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
            meta = tf.compat.v1.saved_model.loader.load(self._session, list(tags), path)
            self.signature_defs = dict(meta.signature_def)
        self._signatures, self._unusable = {}, {}
        for key, sig_def in self.signature_defs.items():
            if key.startswith("__"):  # __saved_model_init_op and the like
                continue
            try:
                self._signatures[key] = Signature(name, key, sig_def, self._session, self._bundle)
            except ValueError as exc:
                self._unusable[key] = str(exc)
        self._in_flight = 0
        self._idle = threading.Condition()

    def signature(self, key) -> Signature:
        key = key or DEFAULT_SIGNATURE
        sig = self._signatures.get(key)
        if sig is None:
            why = self._unusable.get(key, "not found")
            raise status.failed_precondition(
                f"Serving signature key \"{key}\" {why} in model `{self.name}` version {self.version}; "
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

    def close(self):
        """Frees the version's memory; only after wait_idle()."""
        if self._bundle is not None:
            self._bundle.close()
        else:
            self._session.close()
