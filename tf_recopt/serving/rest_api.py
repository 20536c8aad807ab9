"""HTTP/REST front end with TF Serving's URLs, JSON formats and error shape
({"error": "..."} with the HTTP status its http_server.cc maps the code to)."""
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from absl import logging
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2

from tf_recopt.serving import examples, json_codec, status
from tf_recopt.serving.service import ModelRef, handle

_INFER = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?:(predict|classify|regress)")
_STATUS = re.compile(r"(?i)/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata)?")


def _ref(match):
    name, version, label = unquote(match.group(1)), match.group(2), match.group(3)
    return ModelRef(name, int(version) if version else None, unquote(label) if label else None)


def _to_dict(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class RestApi:
    """The request logic, independent of the HTTP server class."""

    def __init__(self, core, metrics, metrics_path=None, max_request_bytes=64 << 20):
        self.core, self.metrics = core, metrics
        self.metrics_path = metrics_path
        self.max_request_bytes = max_request_bytes

    def get(self, path):
        if self.metrics_path and path == self.metrics_path:
            return 200, "text/plain; version=0.0.4", self.metrics.render()
        match = _STATUS.fullmatch(path)
        if not match:
            return self._error(status.not_found(f"Malformed request: GET {path}"))
        ref = _ref(match)
        api = "get_model_metadata" if match.group(4) else "get_model_status"
        fn = self._metadata if match.group(4) else self._status
        return self._respond(*handle(self.metrics, api, "REST", ref.name, lambda: fn(ref)))

    def post(self, path, body: bytes):
        match = _INFER.fullmatch(path)
        if not match:
            return self._error(status.not_found(f"Malformed request: POST {path}"))
        ref, method = _ref(match), match.group(4).lower()
        return self._respond(*handle(self.metrics, method, "REST", ref.name,
                                     lambda: self._infer(ref, method, _parse_json(body))))

    def _infer(self, ref, method, body):
        if not isinstance(body, dict):
            raise status.invalid_argument("request body must be a JSON object")
        signature = body.get("signature_name")
        if method != "predict":
            serialized = examples.serialized_from_json(body)
            _, _, result = self.core.infer(ref, signature, serialized, method)
            return examples.classification_json(result) if method == "classify" else examples.regression_json(result)
        with self.core.servable(ref) as servable:
            sig = servable.signature(signature)
            feeds, fmt = json_codec.predict_feeds(body, sig.inputs)
            _, outputs = self.core.run(servable, sig.name, feeds)
        return json_codec.predict_response(outputs, fmt)

    def _status(self, ref):
        request = get_model_status_pb2.GetModelStatusRequest()
        self._spec(request.model_spec, ref)
        return _to_dict(self.core.model_status(request))

    def _metadata(self, ref):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        self._spec(request.model_spec, ref)
        response = self.core.metadata(request)
        defs = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(defs)
        return {"model_spec": _to_dict(response.model_spec), "metadata": {"signature_def": _to_dict(defs)}}

    @staticmethod
    def _spec(spec, ref):
        spec.name = ref.name
        if ref.version is not None:
            spec.version.value = ref.version
        elif ref.label:
            spec.version_label = ref.label

    def _respond(self, result, error):
        if error is not None:
            return self._error(error)
        return 200, "application/json", json.dumps(result)

    @staticmethod
    def _error(error):
        return error.http_status, "application/json", json.dumps({"error": error.message})


def _parse_json(body):
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise status.invalid_argument(f"JSON Parse error: {exc}") from None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse connections
    api: RestApi = None

    def do_GET(self):
        self._send(*self.api.get(self.path.split("?", 1)[0]))

    def do_POST(self):
        length = self.headers.get("Content-Length")
        try:
            length = int(length) if length is not None else 0
        except ValueError:
            self.close_connection = True
            return self._send(*RestApi._error(status.invalid_argument(f"bad Content-Length: {length!r}")))
        if length > self.api.max_request_bytes:
            self._discard(length)
            return self._send(*RestApi._error(status.invalid_argument(
                f"request body of {length} bytes exceeds the limit of {self.api.max_request_bytes} bytes "
                "(--max_request_bytes)")))
        self._send(*self.api.post(self.path.split("?", 1)[0], self.rfile.read(length)))

    def _discard(self, length):
        """Reads an oversized body without keeping it, so the client sees our
        error instead of a broken pipe; past a bound, just hang up."""
        if length > 16 * self.api.max_request_bytes:
            self.close_connection = True
            return
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 20))
            if not chunk:
                break
            length -= len(chunk)

    def _send(self, code, content_type, text):
        data = text.encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):
        logging.vlog(1, "REST %s", fmt % args)


def start(api: RestApi, port, host="0.0.0.0"):
    handler = type("RecoptRestHandler", (_Handler,), {"api": api})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="recopt-rest", daemon=True).start()
    return server
