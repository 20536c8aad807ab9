"""`tf-recopt serve`: a TF-Serving-compatible model server that loads the
recopt op library (and any other) before any model. Flags follow
tensorflow_model_server's names and defaults, so a launch command carries
over by swapping the binary."""
import argparse
import dataclasses
import os
import signal
import threading
import time
from concurrent import futures

from absl import logging

from tf_recopt.serving.config import ServingConfigError

DEFAULT_MAX_REQUEST_BYTES = 64 << 20


def _flag_bool(value):
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")


def build_parser():
    p = argparse.ArgumentParser(prog="tf-recopt serve", description=__doc__.splitlines()[0])
    add = p.add_argument
    boolean = dict(type=_flag_bool, nargs="?", const=True)
    add("--port", type=int, default=8500, help="gRPC port (0 disables gRPC)")
    add("--rest_api_port", type=int, default=0, help="HTTP/REST port (0 disables REST)")
    add("--model_name", default="default")
    add("--model_base_path", help="directory holding numbered version subdirectories")
    add("--model_config_file", help="ModelServerConfig text proto for several models")
    add("--model_config_file_poll_wait_seconds", type=int, default=0,
        help="re-read --model_config_file this often (0: never)")
    add("--file_system_poll_wait_seconds", type=int, default=1,
        help="look for new versions this often (0: once at start; <0: never)")
    add("--enable_batching", default=False, **boolean)
    add("--batching_parameters_file", help="BatchingParameters text proto")
    add("--monitoring_config_file", help="MonitoringConfig text proto (Prometheus on the REST port)")
    add("--custom_op_paths", default="", help="op libraries (.so) to load before any model, ':' or ',' separated")
    add("--load_recopt_ops", default=True, **boolean, help="load the tf-recopt op library (default true)")
    add("--tensorflow_intra_op_parallelism", type=int, default=0)
    add("--tensorflow_inter_op_parallelism", type=int, default=0,
        help="-1 runs ops inline in the request thread (lowest latency at small batch)")
    add("--saved_model_tags", default="serve")
    add("--num_load_threads", type=int, default=2)
    add("--max_num_load_retries", type=int, default=5)
    add("--load_retry_interval_micros", type=int, default=60_000_000)
    add("--enable_model_warmup", default=True, **boolean)
    add("--num_request_iterations_for_warmup", type=int, default=1)
    add("--native_request_path", default=True, **boolean,
        help="load versions with TensorFlow's C++ loader and run Predict and batching in C++ (default true; "
             "false: the pure-Python path)")
    add("--grpc_max_threads", type=int, default=64, help="gRPC handler threads")
    add("--max_request_bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
        help="largest request accepted on either port")
    return p


def _check_flags(args):
    if bool(args.model_config_file) == bool(args.model_base_path):
        raise ServingConfigError("give exactly one of --model_base_path (one model) or --model_config_file")
    if args.batching_parameters_file and not args.enable_batching:
        raise ServingConfigError("--batching_parameters_file needs --enable_batching")
    if args.port <= 0 and args.rest_api_port <= 0:
        raise ServingConfigError("both --port and --rest_api_port are disabled")


def session_config(args):
    """Each version's Session threading, as TF Serving's flags set it; -1
    inter-op runs a request's ops in its own thread."""
    import tensorflow as tf
    return tf.compat.v1.ConfigProto(intra_op_parallelism_threads=args.tensorflow_intra_op_parallelism,
                                    inter_op_parallelism_threads=args.tensorflow_inter_op_parallelism)


def load_op_libraries(args):
    """Must happen before any model loads: a graph naming an unregistered op fails to import."""
    import tensorflow as tf
    loaded = []
    if args.load_recopt_ops:
        import tf_recopt
        tf_recopt.load_ops()
        loaded.append(tf_recopt.library_path())
    for path in filter(None, args.custom_op_paths.replace(",", ":").split(":")):
        if not os.path.isfile(path):
            raise ServingConfigError(f"--custom_op_paths: no such op library: {path}")
        try:
            tf.load_op_library(path)
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as exc:
            raise ServingConfigError(f"--custom_op_paths: cannot load {path}: {exc.message}") from None
        loaded.append(path)
    for path in loaded:
        logging.info("Loaded op library %s", path)


@dataclasses.dataclass
class RunningServer:
    """Handles to stop a started server."""
    grpc_server: object
    rest_server: object
    manager: object
    scheduler: object
    grpc_port: int
    rest_port: int

    def stop(self, grace=2.0):
        if self.grpc_server is not None:
            self.grpc_server.stop(grace).wait()
        if self.rest_server is not None:
            self.rest_server.shutdown()
            self.rest_server.server_close()
        if self.scheduler is not None:
            self.scheduler.stop()
        self.manager.stop()


def start(args) -> RunningServer:
    import grpc
    from tf_recopt.serving import batching, config, grpc_api, native, rest_api
    from tf_recopt.serving.manager import ModelConfig, ModelManager
    from tf_recopt.serving.metrics import ServingMetrics
    from tf_recopt.serving.service import ServingCore

    _check_flags(args)
    configs = (config.read_model_config_file(args.model_config_file) if args.model_config_file
               else [ModelConfig(args.model_name, args.model_base_path)])
    params = config.read_batching_parameters(args.batching_parameters_file) if args.enable_batching else None
    metrics_path = config.read_metrics_path(args.monitoring_config_file)
    load_op_libraries(args)

    metrics = ServingMetrics()
    use_native = args.native_request_path and native.available()
    if args.native_request_path and not use_native:
        logging.warning("the C++ request path is not built (%s); serving on the Python path", native.IMPORT_ERROR)
    if params is None:
        scheduler = None
    elif use_native:
        scheduler = native.NativeBatcher(params, on_batch=metrics.record_batch)
    else:
        scheduler = batching.BatchScheduler(params, on_batch=metrics.record_batch)
    core = ServingCore(None, scheduler, native=use_native)
    manager = ModelManager(_loader(args, core, metrics, use_native), args.num_load_threads, args.max_num_load_retries,
                           args.load_retry_interval_micros / 1e6)
    core.manager = manager
    manager.configure(configs)
    manager.start_polling(args.file_system_poll_wait_seconds)
    if args.model_config_file and args.model_config_file_poll_wait_seconds > 0:
        _poll_config_file(manager, args.model_config_file, args.model_config_file_poll_wait_seconds)

    def reload_config(proto):
        try:
            manager.configure(config.models_from_proto(proto))
        except ServingConfigError as exc:
            from tf_recopt.serving import status
            raise status.invalid_argument(str(exc)) from None

    grpc_server, grpc_port = None, 0
    if args.port > 0:
        limits = [("grpc.max_receive_message_length", args.max_request_bytes),
                  ("grpc.max_send_message_length", -1)]
        grpc_server = grpc.server(futures.ThreadPoolExecutor(args.grpc_max_threads), options=limits)
        grpc_api.add_services(grpc_server, core, metrics, reload_config)
        grpc_port = grpc_server.add_insecure_port(f"0.0.0.0:{args.port}")
        if not grpc_port:
            raise ServingConfigError(f"--port: cannot bind gRPC port {args.port}")
        grpc_server.start()
        logging.info("Running gRPC ModelServer at 0.0.0.0:%d ...", grpc_port)
    rest_server, rest_port = None, 0
    if args.rest_api_port > 0:
        api = rest_api.RestApi(core, metrics, metrics_path, args.max_request_bytes)
        try:
            rest_server = rest_api.start(api, args.rest_api_port)
        except OSError as exc:
            raise ServingConfigError(f"--rest_api_port: cannot bind {args.rest_api_port}: {exc}") from None
        rest_port = rest_server.server_address[1]
        logging.info("Exporting HTTP/REST API at:localhost:%d ...", rest_port)
    return RunningServer(grpc_server, rest_server, manager, scheduler, grpc_port, rest_port)


def _loader(args, core, metrics, use_native=False):
    from tf_recopt.serving.servable import Servable
    from tf_recopt.serving.warmup import warm_up
    tags = tuple(t for t in args.saved_model_tags.split(",") if t)
    config = session_config(args)

    def load(name, version, path):
        started = time.monotonic()
        servable = Servable(name, version, path, tags, config, use_native)
        if args.enable_model_warmup:
            ran = warm_up(servable, core, args.num_request_iterations_for_warmup)
            if ran:
                logging.info("Finished reading warmup data for model %s version %d: %d requests", name, version, ran)
        metrics.load_latency.observe((time.monotonic() - started) * 1e6, path)
        return servable
    return load


def _poll_config_file(manager, path, interval_s):
    from tf_recopt.serving import config

    def loop():
        while True:
            time.sleep(interval_s)
            try:
                manager.configure(config.read_model_config_file(path))
            except ServingConfigError as exc:  # keep serving the last good config
                logging.error("ignoring changed model config: %s", exc)
    threading.Thread(target=loop, name="recopt-config-poll", daemon=True).start()


def main(argv=None):
    args = build_parser().parse_args(argv)
    logging.set_verbosity(logging.INFO)
    logging.use_absl_handler()
    server = start(args)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    logging.info("Shutting down the model server")
    server.stop()
    return 0
