"""SavedModel warm-up as TF Serving does it: replay the PredictionLog
records in assets.extra/tf_serving_warmup_requests against a version before
it serves, so the first real request does not pay for lazy initialisation."""
import os

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from tf_recopt.serving import examples, status, tensors

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
MAX_RECORDS = 1000  # TF Serving's limit


def warm_up(servable, core, iterations=1):
    """Replays the records; returns how many ran. A failing record fails
    the load, as in TF Serving."""
    path = os.path.join(servable.path, WARMUP_FILE)
    if not os.path.exists(path):
        return 0
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    if len(logs) > MAX_RECORDS:
        raise status.invalid_argument(f"{path}: {len(logs)} warm-up records, more than the limit of {MAX_RECORDS}")
    for _ in range(iterations):
        for i, log in enumerate(logs):
            _replay(servable, core, log, f"{path} record {i}")
    return len(logs) * iterations


def _replay(servable, core, log, where):
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        feeds = {k: tensors.to_array(v, k) for k, v in request.inputs.items()}
        core.run(servable, request.model_spec.signature_name, feeds, request.output_filter)
    elif kind in ("classify_log", "regress_log"):
        request = getattr(log, kind).request
        serialized = examples.serialized_from_input(request.input)
        core.infer_on(servable, request.model_spec.signature_name, serialized, kind.split("_")[0])
    else:
        raise status.invalid_argument(f"{where}: unsupported warm-up log type {kind!r}")
