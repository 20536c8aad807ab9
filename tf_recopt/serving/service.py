"""The request handling both front ends share: find the servable, check
the request against the signature, run it (through the batch scheduler
when batching is on), build TF Serving's response protos."""
import dataclasses
import time
from typing import Dict, Optional, Sequence

import grpc
import numpy as np
from absl import logging
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, get_model_status_pb2,
                                     inference_pb2, predict_pb2, regression_pb2)

from tf_recopt.serving import examples, status, tensors
from tf_recopt.serving.manager import ModelManager
from tf_recopt.serving.native import NativeBatcher


@dataclasses.dataclass(frozen=True)
class ModelRef:
    name: str
    version: Optional[int] = None
    label: Optional[str] = None

    @classmethod
    def from_spec(cls, spec):
        if not spec.name:
            raise status.invalid_argument("Missing model name in request (model_spec.name)")
        which = spec.WhichOneof("version_choice")
        return cls(spec.name, spec.version.value if which == "version" else None,
                   spec.version_label if which == "version_label" else None)


def handle(metrics, api, entrypoint, model_name, fn):
    """Runs fn() for one request of either front end and records it;
    returns (result, None) or (None, ServingError). A bug in a handler
    answers INTERNAL, never kills the server."""
    started = time.monotonic()
    result, error = None, None
    try:
        result = fn()
    except status.ServingError as exc:
        error = exc
    except Exception as exc:
        logging.exception("%s %s on model %s failed", entrypoint, api, model_name)
        error = status.ServingError(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
    if metrics is not None:
        metrics.record_request(model_name or "", api, entrypoint, "OK" if error is None else error.code_name,
                               time.monotonic() - started)
    return result, error


def _check_filter(sig, output_filter):
    unknown = sorted(set(output_filter) - set(sig.outputs))
    if unknown:
        raise status.invalid_argument(
            f"output tensor alias not found in signature: {', '.join(unknown)}. Outputs expected to be in "
            f"the set {{{', '.join(sig.outputs)}}}.")


def _fill_spec(spec, servable, signature_name):
    spec.name = servable.name
    spec.version.value = servable.version
    spec.signature_name = signature_name


class ServingCore:
    def __init__(self, manager: ModelManager, scheduler=None, native=False):
        self.manager = manager
        self.scheduler = scheduler
        self.native = native  # versions load into C++ bundles; Predict can go bytes to bytes

    # -- execution --------------------------------------------------------
    def run(self, servable, signature_name, feeds: Dict[str, np.ndarray], output_filter: Sequence[str] = ()):
        sig = servable.signature(signature_name)
        sig.check(feeds)
        _check_filter(sig, output_filter)
        rows = {v.shape[0] if v.ndim else -1 for v in feeds.values()}
        if isinstance(self.scheduler, NativeBatcher):
            outputs = sig.run(feeds, self.scheduler)  # the C++ batcher decides, by the same rules as below
        elif self.scheduler is not None and sig.batchable and len(rows) == 1 and rows != {0}:
            key = (id(sig),) + tuple(sorted((k, v.dtype.str, v.shape[1:]) for k, v in feeds.items()))
            outputs = self.scheduler.run(key, sig.run, feeds, rows.pop(), label=servable.name)
        else:
            outputs = sig.run(feeds)
        if output_filter:
            outputs = {k: outputs[k] for k in output_filter}
        return sig, outputs

    def servable(self, ref):
        """The manager's servable for a ModelRef or a request's model_spec."""
        ref = ref if isinstance(ref, ModelRef) else ModelRef.from_spec(ref)
        return self.manager.servable(ref.name, ref.version, ref.label)

    # -- PredictionService --------------------------------------------------
    def predict(self, request):
        feeds = {k: tensors.to_array(v, k) for k, v in request.inputs.items()}
        with self.servable(request.model_spec) as servable:
            sig, outputs = self.run(servable, request.model_spec.signature_name, feeds, request.output_filter)
            response = predict_pb2.PredictResponse()
            _fill_spec(response.model_spec, servable, sig.name)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tensors.to_proto(value))
        return response

    def predict_bytes(self, request, payload):
        """Predict with `payload` (the serialized `request`) decoded, run and
        answered in C++ when the version is on the native path: returns the
        serialized PredictResponse."""
        with self.servable(request.model_spec) as servable:
            sig = servable.signature(request.model_spec.signature_name)
            if sig.native_call is None:
                return self.predict(request).SerializeToString()
            sig.check_names(set(request.inputs))
            _check_filter(sig, request.output_filter)
            want = [sig.outputs.index(k) for k in dict.fromkeys(request.output_filter)] if request.output_filter \
                else list(range(len(sig.outputs)))
            batcher = self.scheduler if isinstance(self.scheduler, NativeBatcher) else None
            outputs = sig.native_call.predict(payload, want, batcher)
            tail = predict_pb2.PredictResponse()
            _fill_spec(tail.model_spec, servable, sig.name)
        # Serialized messages concatenate: outputs (field 1) then model_spec (field 2).
        return outputs + tail.SerializeToString()

    def infer_on(self, servable, signature_name, serialized, method):
        sig = servable.signature(signature_name)
        examples.check_signature(sig, method)
        _, outputs = self.run(servable, sig.name, {examples.INPUTS: serialized})
        n = len(serialized)
        result = examples.classification_result(outputs, n) if method == "classify" \
            else examples.regression_result(outputs, n)
        return sig.name, result

    def infer(self, ref: ModelRef, signature_name, serialized, method):
        """Classify/regress on serialized examples; returns (name, version, result)."""
        with self.servable(ref) as servable:
            _, result = self.infer_on(servable, signature_name, serialized, method)
            return servable.name, servable.version, result

    def classify(self, request):
        return self._single(request, "classify", classification_pb2.ClassificationResponse())

    def regress(self, request):
        return self._single(request, "regress", regression_pb2.RegressionResponse())

    def _single(self, request, method, response):
        serialized = examples.serialized_from_input(request.input)
        with self.servable(request.model_spec) as servable:
            sig_name, result = self.infer_on(servable, request.model_spec.signature_name, serialized, method)
            _fill_spec(response.model_spec, servable, sig_name)
        response.result.CopyFrom(result)
        return response

    def multi_inference(self, request):
        if not request.tasks:
            raise status.invalid_argument("MultiInferenceRequest has no tasks")
        names = {t.model_spec.name for t in request.tasks}
        if len(names) != 1:
            raise status.invalid_argument(f"All tasks must use the same model name; got {', '.join(sorted(names))}")
        seen = set()
        for t in request.tasks:
            if t.model_spec.signature_name in seen:
                raise status.invalid_argument(f"Duplicate evaluation of signature: {t.model_spec.signature_name}")
            seen.add(t.model_spec.signature_name)
            if t.method_name not in ("tensorflow/serving/classify", "tensorflow/serving/regress"):
                raise status.ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                          f"Unsupported signature method_name: {t.method_name}")
        serialized = examples.serialized_from_input(request.input)
        response = inference_pb2.MultiInferenceResponse()
        with self.servable(request.tasks[0].model_spec) as servable:
            for t in request.tasks:
                method = t.method_name.rsplit("/", 1)[1]
                sig_name, result = self.infer_on(servable, t.model_spec.signature_name, serialized, method)
                out = response.results.add()
                _fill_spec(out.model_spec, servable, sig_name)
                (out.classification_result if method == "classify" else out.regression_result).CopyFrom(result)
        return response

    def metadata(self, request):
        fields = list(request.metadata_field)
        if not fields:
            raise status.invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for f in fields:
            if f != "signature_def":
                raise status.invalid_argument(f"Metadata field {f} is not supported")
        with self.servable(request.model_spec) as servable:
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            defs = get_model_metadata_pb2.SignatureDefMap()
            for key, value in servable.signature_defs.items():
                defs.signature_def[key].CopyFrom(value)
        response.metadata["signature_def"].Pack(defs)
        return response

    # -- ModelService -------------------------------------------------------
    def model_status(self, request):
        ref = ModelRef.from_spec(request.model_spec)
        response = get_model_status_pb2.GetModelStatusResponse()
        for rec in self.manager.status(ref.name, ref.version, ref.label):
            out = response.model_version_status.add()
            out.version = rec.version
            out.state = rec.state
            out.status.SetInParent()  # TF Serving always reports a status, OK included
            if rec.error is not None:
                out.status.error_code = rec.error.code.value[0]
                out.status.error_message = rec.error.message
        return response
