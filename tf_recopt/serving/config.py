"""TF Serving's configuration files, read with its own text-proto formats:
--model_config_file (ModelServerConfig, from tensorflow-serving-api),
--batching_parameters_file (BatchingParameters) and
--monitoring_config_file (MonitoringConfig). The last two are not shipped
in the pip package, so their descriptors are declared here, field for
field as in session_bundle_config.proto and monitoring_config.proto."""
import functools

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from tensorflow_serving.config import model_server_config_pb2

from tf_recopt.errors import RecoptError
from tf_recopt.serving.batching import BatchingParameters
from tf_recopt.serving.manager import ModelConfig, VersionPolicy

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


class ServingConfigError(RecoptError):
    """A configuration file or flag the server cannot use."""


_F = descriptor_pb2.FieldDescriptorProto
_BATCHING_FIELDS = [  # name, number, type, wrapper type or None, repeated
    ("max_batch_size", 1, _F.TYPE_MESSAGE, "Int64Value", False),
    ("batch_timeout_micros", 2, _F.TYPE_MESSAGE, "Int64Value", False),
    ("max_enqueued_batches", 3, _F.TYPE_MESSAGE, "Int64Value", False),
    ("num_batch_threads", 4, _F.TYPE_MESSAGE, "Int64Value", False),
    ("thread_pool_name", 5, _F.TYPE_MESSAGE, "StringValue", False),
    ("allowed_batch_sizes", 6, _F.TYPE_INT64, None, True),
    ("pad_variable_length_inputs", 7, _F.TYPE_BOOL, None, False),
    ("enable_large_batch_splitting", 8, _F.TYPE_MESSAGE, "BoolValue", False),
    ("max_execution_batch_size", 9, _F.TYPE_MESSAGE, "Int64Value", False),
]


@functools.lru_cache(maxsize=None)
def _message_classes():
    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    f = descriptor_pb2.FileDescriptorProto(name="tf_recopt/serving_config.proto", package="tensorflow.serving",
                                           syntax="proto3", dependency=[wrappers.name])
    batching = f.message_type.add(name="BatchingParameters")
    for name, number, ftype, wrapper, repeated in _BATCHING_FIELDS:
        field = batching.field.add(name=name, number=number, type=ftype,
                                   label=_F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL)
        if wrapper:
            field.type_name = f".google.protobuf.{wrapper}"
    prom = f.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=_F.TYPE_BOOL, label=_F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    mon = f.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                  type_name=".tensorflow.serving.PrometheusConfig")
    pool.Add(f)
    return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
                 for n in ("BatchingParameters", "MonitoringConfig"))


def _parse(path, message, what):
    try:
        with open(path, encoding="utf-8") as fh:
            text_format.Parse(fh.read(), message)
    except OSError as exc:
        raise ServingConfigError(f"cannot read {what} {path}: {exc}") from None
    except text_format.ParseError as exc:
        raise ServingConfigError(f"{what} {path} is not a valid {type(message).__name__} text proto: {exc}") from None
    return message


def read_batching_parameters(path=None) -> BatchingParameters:
    if not path:
        return BatchingParameters()
    proto = _parse(path, _message_classes()[0](), "--batching_parameters_file")
    kwargs = {}
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads",
                 "enable_large_batch_splitting"):
        if proto.HasField(name):
            kwargs[name] = getattr(proto, name).value
    if proto.allowed_batch_sizes:
        kwargs["allowed_batch_sizes"] = tuple(proto.allowed_batch_sizes)
    if proto.pad_variable_length_inputs:
        raise ServingConfigError(f"{path}: pad_variable_length_inputs is not supported by this server: requests "
                                 "with different non-batch shapes are batched in separate queues instead")
    try:
        return BatchingParameters(**kwargs)
    except ValueError as exc:
        raise ServingConfigError(f"{path}: {exc}") from None


def read_metrics_path(path=None):
    """The Prometheus path if --monitoring_config_file enables it, else None."""
    if not path:
        return None
    proto = _parse(path, _message_classes()[1](), "--monitoring_config_file")
    if not proto.prometheus_config.enable:
        return None
    return proto.prometheus_config.path or PROMETHEUS_PATH


def read_model_config_file(path):
    proto = _parse(path, model_server_config_pb2.ModelServerConfig(), "--model_config_file")
    return models_from_proto(proto, path)


def models_from_proto(proto, where="ModelServerConfig"):
    if proto.WhichOneof("config") != "model_config_list":
        raise ServingConfigError(f"{where}: only model_config_list is supported")
    configs = []
    for cfg in proto.model_config_list.config:
        if not cfg.name or not cfg.base_path:
            raise ServingConfigError(f"{where}: every config needs name and base_path (got name={cfg.name!r})")
        if cfg.model_platform not in ("", "tensorflow"):
            raise ServingConfigError(f"{where}: model {cfg.name}: model_platform {cfg.model_platform!r} is not "
                                     "supported (only tensorflow)")
        configs.append(ModelConfig(cfg.name, cfg.base_path, _policy(cfg.model_version_policy),
                                   dict(cfg.version_labels)))
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
        raise ServingConfigError(f"{where}: model names must be unique, got {names}")
    return configs


def _policy(proto):
    which = proto.WhichOneof("policy_choice")
    if which == "all":
        return VersionPolicy("all")
    if which == "specific":
        return VersionPolicy("specific", versions=frozenset(proto.specific.versions))
    if which == "latest" and proto.latest.num_versions > 0:
        return VersionPolicy("latest", num_versions=proto.latest.num_versions)
    return VersionPolicy()
