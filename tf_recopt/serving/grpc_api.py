"""gRPC front end: tensorflow.serving.PredictionService and ModelService on
the generated stubs from tensorflow-serving-api."""
import grpc
from google.protobuf.message import DecodeError
from tensorflow_serving.apis import (model_management_pb2, model_service_pb2_grpc, predict_pb2,
                                     prediction_service_pb2_grpc)

from tf_recopt.serving.service import handle


class _Base:
    def __init__(self, core, metrics):
        self._core, self._metrics = core, metrics

    def _call(self, api, request, model_name, fn, context):
        result, error = handle(self._metrics, api, "GRPC", model_name, lambda: fn(request))
        if error is not None:
            context.abort(error.code, error.message)
        return result


class PredictionService(_Base, prediction_service_pb2_grpc.PredictionServiceServicer):
    def Predict(self, request, context):
        return self._call("predict", request, request.model_spec.name, self._core.predict, context)

    def Classify(self, request, context):
        return self._call("classify", request, request.model_spec.name, self._core.classify, context)

    def Regress(self, request, context):
        return self._call("regress", request, request.model_spec.name, self._core.regress, context)

    def MultiInference(self, request, context):
        name = request.tasks[0].model_spec.name if request.tasks else ""
        return self._call("multi_inference", request, name, self._core.multi_inference, context)

    def GetModelMetadata(self, request, context):
        return self._call("get_model_metadata", request, request.model_spec.name, self._core.metadata, context)


class ModelService(_Base, model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core, metrics, reload_config):
        super().__init__(core, metrics)
        self._reload = reload_config

    def GetModelStatus(self, request, context):
        return self._call("get_model_status", request, request.model_spec.name, self._core.model_status, context)

    def HandleReloadConfigRequest(self, request, context):
        def reload(req):
            self._reload(req.config)
            return model_management_pb2.ReloadConfigResponse()
        return self._call("reload_config", request, "", reload, context)


class RawPredict(_Base):
    """Predict as bytes in, bytes out: registered ahead of the generated
    servicer when the core is native, so grpcio neither parses the request's
    tensors nor builds the response in Python."""

    def __call__(self, payload, context):
        try:
            request = predict_pb2.PredictRequest.FromString(payload)
        except DecodeError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed PredictRequest: {exc}")
        return self._call("predict", request, request.model_spec.name,
                          lambda r: self._core.predict_bytes(r, payload), context)


def add_services(server, core, metrics, reload_config):
    if core.native:
        raw = grpc.unary_unary_rpc_method_handler(RawPredict(core, metrics))
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {"Predict": raw}),))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(core, metrics, reload_config), server)
