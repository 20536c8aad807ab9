"""The C++ request path (serving/native/, built as tf_recopt.serving.request_path
by `make ops` / setup.py) seen from Python: a SavedModel loaded by
TensorFlow's C++ loader, Session callables run with the GIL released,
PredictRequest bytes decoded and PredictResponse bytes encoded in C++, and
the C++ batcher. `tf-recopt serve --native_request_path=false` keeps the
pure-Python path (tf.compat.v1 loader, numpy protos, BatchScheduler)."""
import numpy as np
import tensorflow as tf

from tf_recopt.serving import status

try:
    from tf_recopt.serving import request_path as _native
    IMPORT_ERROR = None
except ImportError as exc:  # not built: the Python path serves alone
    _native = None
    IMPORT_ERROR = exc

_NUMPY = {}  # DataType enum -> numpy dtype


def available():
    return _native is not None


def _error(exc):
    code, message = exc.args
    return status.from_code(code, message)


def _numpy_dtype(enum):
    dtype = _NUMPY.get(enum)
    if dtype is None:
        dtype = _NUMPY[enum] = np.dtype(tf.as_dtype(enum).as_numpy_dtype)
    return dtype


def _feed(array, enum):
    if enum == tf.string.as_datatype_enum:
        return enum, array.shape, [v if isinstance(v, bytes) else str(v).encode() for v in array.ravel().tolist()]
    return enum, array.shape, np.ascontiguousarray(array)


def _output(value):
    enum, shape, data = value
    if isinstance(data, list):
        return np.array(data, dtype=object).reshape(shape)
    return np.frombuffer(data, _numpy_dtype(enum)).reshape(shape)


class Bundle:
    """One SavedModel version in a C++ SavedModelBundle."""

    def __init__(self, path, tags, session_config):
        config = session_config if session_config is not None else tf.compat.v1.ConfigProto()
        try:
            self.capsule = _native.load(path, list(tags), config.SerializeToString())
        except _native.Error as exc:
            raise RuntimeError(f"loading SavedModel {path} with tags {list(tags)}: {exc.args[1]}") from None
        from tensorflow.core.protobuf import meta_graph_pb2
        self.signature_defs = {k: meta_graph_pb2.SignatureDef.FromString(v)
                               for k, v in _native.signature_defs(self.capsule).items()}

    def make_callable(self, options):
        try:
            return _native.make_callable(self.capsule, options.SerializeToString())
        except _native.Error as exc:
            raise ValueError(exc.args[1]) from None

    def close(self):
        _native.close(self.capsule)


class Call:
    """One signature's callable on a Bundle: numpy in and out (`run`), or
    PredictRequest bytes in and PredictResponse.outputs bytes out
    (`predict`), optionally through a NativeBatcher."""

    def __init__(self, bundle, options, keys, inputs, outputs, model_name, signature_name, batchable):
        self._bundle = bundle.capsule
        self._handle = bundle.make_callable(options)
        self._keys, self._outputs = list(keys), list(outputs)
        self._enums = [inputs[k].dtype.as_datatype_enum for k in self._keys]
        self._expects = [(spec.dtype.as_datatype_enum,
                          None if spec.shape.rank is None else tuple(-1 if d is None else d for d in spec.shape.as_list()),
                          spec.dtype.name, shape_str(spec.shape)) for spec in (inputs[k] for k in self._keys)]
        self._label, self._signature, self._batchable = model_name, signature_name, batchable

    def run(self, feeds, batcher=None):
        args = [_feed(feeds[k], e) for k, e in zip(self._keys, self._enums)]
        try:
            values = _native.run(self._bundle, self._handle, args, batcher.capsule if batcher else None,
                                 self._batchable, self._label, self._outputs)
        except _native.Error as exc:
            raise _error(exc) from None
        return dict(zip(self._outputs, map(_output, values)))

    def predict(self, request_bytes, want, batcher=None):
        try:
            return _native.predict(self._bundle, self._handle, request_bytes, self._keys, self._expects, want,
                                   self._outputs, batcher.capsule if batcher else None, self._batchable,
                                   self._label, self._signature)
        except _native.Error as exc:
            raise _error(exc) from None


class NativeBatcher:
    """TF Serving's batching (the BatchScheduler's semantics) in C++."""

    def __init__(self, params, on_batch=None):
        self.params = params
        self.capsule = _native.batcher(params.max_batch_size, params.batch_timeout_micros,
                                       params.max_enqueued_batches, params.num_batch_threads,
                                       tuple(params.allowed_batch_sizes), params.enable_large_batch_splitting,
                                       on_batch)

    def stop(self):
        _native.stop_batcher(self.capsule)


def shape_str(shape):
    return "[" + ", ".join("?" if d is None else str(d) for d in shape.as_list()) + "]" if shape.rank is not None \
        else "<unknown>"
