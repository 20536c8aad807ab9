"""RecOptimizer's executor: resolve the Trainer's serving model, optimize it
into the output artifact, fail the component on a parity failure."""
import json
import os
from typing import Any, Dict, List

import tensorflow as tf
from absl import logging
from tfx import types
from tfx.components.util import model_utils
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils, standard_artifact_utils
from tfx.utils import path_utils

import tf_recopt
from tf_recopt.errors import ParityError, RecoptError
from tf_recopt.options import OptimizeOptions
from tf_recopt.tfx import keys, staging

# Parameters passed to optimize() as they are; passes/signatures arrive as JSON.
_DIRECT = (keys.PRECISION, keys.RTOL, keys.ATOL, keys.RECALL_FLOOR, keys.PARITY_BATCH_SIZE, keys.LABEL_KEY,
           keys.MAX_AUC_DROP, keys.MAX_LOGLOSS_INCREASE, keys.METRIC_EXAMPLES)


class RecOptimizerError(RecoptError, RuntimeError):
    """The model failed parity (or recall): the run stops before Pusher."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class Executor(base_executor.BaseExecutor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]], output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        self._log_startup(input_dict, output_dict, exec_properties)
        model = artifact_utils.get_single_instance(input_dict[keys.MODEL])
        output = artifact_utils.get_single_instance(output_dict[keys.OPTIMIZED_MODEL])
        if not _blessed(input_dict.get(keys.MODEL_BLESSING)):
            logging.info("RecOptimizer: model %s was not blessed; nothing optimized (Pusher will skip it too)",
                         model.uri)
            output.set_int_custom_property(keys.OPTIMIZED_PROPERTY, 0)
            return
        options = optimize_options(exec_properties)
        examples = input_dict.get(keys.EXAMPLES)
        if examples:
            options["sample_inputs"] = example_files(examples, exec_properties.get(keys.EXAMPLES_SPLIT) or "eval")
        report = _optimize(serving_model_path(model), path_utils.serving_model_dir(output.uri), options)
        output.set_int_custom_property(keys.OPTIMIZED_PROPERTY, 1)
        output.set_string_custom_property(keys.REPORT_PROPERTY, report.to_json(indent=None))


def _blessed(blessings):
    return not blessings or model_utils.is_model_blessed(artifact_utils.get_single_instance(blessings))


def _optimize(src_uri, dst_uri, options):
    logging.info("RecOptimizer: optimizing %s -> %s", src_uri, dst_uri)
    with staging.staged(src_uri, dst_uri) as (src, dst):
        try:
            report = tf_recopt.optimize(src, dst, overwrite=True, **options)
        except ParityError as e:
            report = e.report.to_json() if e.report is not None else "{}"
            raise RecOptimizerError(f"RecOptimizer: {e}\nreport: {report}", e.report) from e
    logging.info("RecOptimizer: %s", report)
    return report


def optimize_options(exec_properties):
    """optimize() keyword arguments from the component's parameters."""
    options = {}
    custom_ops = exec_properties.get(keys.CUSTOM_OPS)
    if custom_ops is not None:
        options["custom_ops"] = bool(custom_ops)
    for key in (keys.PASSES, keys.SIGNATURES):
        if exec_properties.get(key):
            options[key] = _json_list(key, exec_properties[key])
    options.update({k: exec_properties[k] for k in _DIRECT if exec_properties.get(k) is not None})
    extra = json.loads(exec_properties.get(keys.OPTIMIZE_OPTIONS) or "{}")
    fields = {f for f in OptimizeOptions.__dataclass_fields__ if f != "sample_inputs"}
    unknown = sorted(set(extra) - fields)
    if unknown:
        raise ValueError(f"RecOptimizer optimize_options: unknown field(s) {unknown}; known: {sorted(fields)}")
    return {**extra, **options}


def _json_list(key, text):
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"RecOptimizer {key}: expected a JSON list of names, got {text!r}")
    return value


def serving_model_path(model):
    """Trainer's Format-Serving (or a pre-1.0 layout), else a SavedModel at the artifact's root."""
    candidates = [path_utils.serving_model_path(model.uri, path_utils.is_old_model_artifact(model)), model.uri]
    for path in candidates:
        if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
            return path
    raise ValueError(f"RecOptimizer input model {model.uri}: no saved_model.pb in {candidates}")


def example_files(examples, split):
    """The TFRecord files of one split of an Examples artifact."""
    artifact = artifact_utils.get_single_instance(examples)
    names = artifact_utils.decode_split_names(artifact.split_names) if artifact.split_names else []
    if split not in names:
        raise ValueError(f"RecOptimizer examples_split '{split}': the Examples artifact {artifact.uri} "
                         f"has splits {names}")
    uri = standard_artifact_utils.get_split_uris(examples, split)[0]
    return [uri.rstrip("/") + "/" + f for f in sorted(tf.io.gfile.listdir(uri))]
