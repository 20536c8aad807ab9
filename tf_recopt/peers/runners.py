"""One runner per peer: bind(feeds) -> a zero-argument call returning the
outputs as numpy arrays (so every peer pays for materialising its results)."""
import numpy as np
import tensorflow as tf


class TFRunner:
    """A SavedModel signature, as is or wrapped in tf.function(jit_compile=True)."""

    def __init__(self, path, signature, jit=False):
        self._module = tf.saved_model.load(path)   # keeps the signature's variables alive
        fn = self._module.signatures[signature]
        self._fn = tf.function(fn, jit_compile=True) if jit else fn

    def bind(self, feeds):
        tensors = {k: tf.constant(v) for k, v in feeds.items()}
        return lambda: {k: v.numpy() for k, v in self._fn(**tensors).items()}


class OnnxRunner:
    """ONNX Runtime's CPU provider; threads=1 sets one intra-op thread, as TF's."""

    def __init__(self, path, threads):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1 if threads == "1" else 0
        options.inter_op_num_threads = 1
        # Peers run round-robin in one process: ORT's pool keeps spinning
        # after Run() returns by default, on cores the next peer then
        # shares. This stops it at return (it still spins inside a Run).
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self._inputs = {i.name.split(":")[0]: i.name for i in self._session.get_inputs()}
        self._outputs = [o.name for o in self._session.get_outputs()]

    def bind(self, feeds):
        keys = {name: feed_key(name, feeds) for name in self._inputs}
        missing = sorted(name for name, key in keys.items() if key is None)
        if missing:
            raise ValueError(f"ONNX model inputs {missing} are not signature inputs {sorted(feeds)}")
        bound = {self._inputs[name]: np.asarray(feeds[key]) for name, key in keys.items()}
        names = [o.split(":")[0] for o in self._outputs]
        return lambda: dict(zip(names, self._session.run(self._outputs, bound)))


def feed_key(name, feeds):
    """The signature input an ONNX input name stands for: the same name, or,
    since tf2onnx lower-cases input names (C0 -> c0), the one input whose
    name matches ignoring case; None when there is none or several."""
    if name in feeds:
        return name
    same = [k for k in feeds if k.lower() == name.lower()]
    return same[0] if len(same) == 1 else None


class OpenvinoRunner:
    """OpenVINO's CPU plugin on the saved IR, compiled per batch shape with
    the inputs reshaped to it (static shapes, as OpenVINO users deploy a
    fixed batch); threads=1 sets one inference thread; bf16 asks for bf16
    inference precision (f32 forced otherwise, since OpenVINO picks bf16
    itself on CPUs with AVX512_BF16 or AMX)."""

    def __init__(self, path, threads, bf16=False):
        import openvino as ov
        self._core, self._path = ov.Core(), path
        self._config = {"INFERENCE_PRECISION_HINT": "bf16" if bf16 else "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads == "1":
            self._config["INFERENCE_NUM_THREADS"] = 1

    def bind(self, feeds):
        model = self._core.read_model(self._path)
        inputs = {next(iter(i.get_names())) for i in model.inputs}
        missing = sorted(inputs - set(feeds))
        if missing:
            raise ValueError(f"OpenVINO model inputs {missing} are not signature inputs {sorted(feeds)}")
        arrays = {k: np.asarray(v) for k, v in feeds.items() if k in inputs}
        model.reshape({k: list(a.shape) for k, a in arrays.items()})
        compiled = self._core.compile_model(model, "CPU", self._config)
        request = compiled.create_infer_request()
        bound = {next(iter(i.get_names())): i for i in compiled.inputs}
        bound = {bound[k]: a for k, a in arrays.items()}
        outputs = [(next(iter(o.get_names())), o) for o in compiled.outputs]

        def call():
            result = request.infer(bound)
            return {name: np.array(result[port]) for name, port in outputs}
        return call


class SessionRunner:
    """The SavedModel in a v1 Session, signature run as a Session callable:
    TF Serving's path (tf_recopt.serving's Servable), no eager call overhead."""

    def __init__(self, path, signature, threads):
        from tf_recopt.serving.servable import Servable
        # One thread is inline, as the eager peers' (measure.configure_threads)
        # and ONNX Runtime's: inter-op 1 would hand every call to a pool
        # thread and back, ~50 us a call on a VM whatever the model.
        one = threads == "1"
        config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1 if one else 0,
                                          inter_op_parallelism_threads=-1 if one else 0)
        self._servable = Servable("bench", 1, path, session_config=config)
        self._signature = self._servable.signature(signature)

    def bind(self, feeds):
        arrays = {k: np.asarray(v) for k, v in feeds.items()}
        return lambda: self._signature.run(arrays)


def make_runner(peer, path, signature, threads):
    if peer == "onnxruntime":
        return OnnxRunner(path, threads)
    if peer.startswith("openvino"):
        return OpenvinoRunner(path, threads, bf16=peer.endswith("_bf16"))
    if peer.startswith("recopt") and peer != "recopt_stock":
        import tf_recopt
        tf_recopt.load_ops()
    if peer.endswith("_session"):
        return SessionRunner(path, signature, threads)
    return TFRunner(path, signature, jit=peer == "xla")
