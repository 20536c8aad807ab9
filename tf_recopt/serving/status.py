"""One error type for both front ends: a gRPC status code plus a message
that names the model, input or field at fault. REST maps the code to an
HTTP status exactly as TF Serving's http_server.cc does."""
import grpc

_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# tensorflow.error.Code and grpc share numbering; TF errors raised while a
# model runs (an out-of-range id, say) keep their code on the wire.
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self):
        return _HTTP.get(self.code, 500)

    @property
    def code_name(self):
        return self.code.name


def invalid_argument(message):
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message):
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message):
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def unavailable(message):
    return ServingError(grpc.StatusCode.UNAVAILABLE, message)


def from_code(code, message):
    """A TensorFlow status code (numbered as gRPC's) and its message."""
    return ServingError(_BY_NUMBER.get(code, grpc.StatusCode.UNKNOWN), message)


def from_tf_error(exc):
    """A tf.errors.OpError raised by a model, with its own code."""
    code = _BY_NUMBER.get(getattr(exc, "error_code", 2), grpc.StatusCode.UNKNOWN)
    message = getattr(exc, "message", None) or str(exc)
    return ServingError(code, message)
