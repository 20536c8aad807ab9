"""RecOptimizer's ComponentSpec and DSL class (keys shared with executor.py)."""
import json
from typing import Optional, Sequence

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ExecutionParameter

from tf_recopt.tfx import keys
from tf_recopt.tfx.executor import Executor


class RecOptimizerSpec(types.ComponentSpec):
    """Inputs and outputs as Pusher names them; parameters mirror optimize()."""

    PARAMETERS = {
        keys.CUSTOM_OPS: ExecutionParameter(type=int, optional=True),
        keys.PASSES: ExecutionParameter(type=str, optional=True),
        keys.SIGNATURES: ExecutionParameter(type=str, optional=True),
        keys.PRECISION: ExecutionParameter(type=str, optional=True),
        keys.RTOL: ExecutionParameter(type=float, optional=True),
        keys.ATOL: ExecutionParameter(type=float, optional=True),
        keys.RECALL_FLOOR: ExecutionParameter(type=float, optional=True),
        keys.EXAMPLES_SPLIT: ExecutionParameter(type=str, optional=True),
        keys.PARITY_BATCH_SIZE: ExecutionParameter(type=int, optional=True),
        keys.OPTIMIZE_OPTIONS: ExecutionParameter(type=str, optional=True),
        keys.LABEL_KEY: ExecutionParameter(type=str, optional=True),
        keys.MAX_AUC_DROP: ExecutionParameter(type=float, optional=True),
        keys.MAX_LOGLOSS_INCREASE: ExecutionParameter(type=float, optional=True),
        keys.METRIC_EXAMPLES: ExecutionParameter(type=int, optional=True),
    }
    INPUTS = {
        keys.MODEL: ChannelParameter(type=standard_artifacts.Model),
        keys.MODEL_BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing, optional=True),
        keys.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples, optional=True),
    }
    OUTPUTS = {
        keys.OPTIMIZED_MODEL: ChannelParameter(type=standard_artifacts.Model),
    }


class RecOptimizer(base_component.BaseComponent):
    """Optimizes the Trainer's serving model with tf_recopt.optimize().

    The output `optimized_model` is a Model artifact laid out as Trainer's
    (`<uri>/Format-Serving`), so Pusher, InfraValidator and BulkInferrer
    take it unchanged. Its custom properties: `recopt_optimized` (1, or 0
    when the input was not blessed and nothing was written) and
    `recopt_report` (the OptimizationReport as JSON; the same file is in the
    SavedModel at assets.extra/recopt_report.json). A parity or recall
    failure fails the component, with the report in the error, so the
    pipeline never pushes.
    """

    SPEC_CLASS = RecOptimizerSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(self, model: types.BaseChannel, model_blessing: Optional[types.BaseChannel] = None,
                 examples: Optional[types.BaseChannel] = None, custom_ops: bool = True,
                 passes: Optional[Sequence[str]] = None, signatures: Optional[Sequence[str]] = None,
                 precision: str = "fp32", rtol: Optional[float] = None, atol: Optional[float] = None,
                 recall_floor: Optional[float] = None, examples_split: str = "eval",
                 parity_batch_size: Optional[int] = None, optimize_options: Optional[dict] = None,
                 label_key: Optional[str] = None, max_auc_drop: Optional[float] = None,
                 max_logloss_increase: Optional[float] = None, metric_examples: Optional[int] = None):
        """Args mirror tf_recopt.optimize(); `examples` (optional) gives parity
        inputs: up to `parity_batch_size` tf.Examples of `examples_split`;
        with `label_key`, up to `metric_examples` of them also judge the
        probability outputs by AUC and logloss (max_auc_drop,
        max_logloss_increase), as optimize() does.
        `optimize_options` holds any further OptimizeOptions fields
        (freeze_max_bytes, seed, ...)."""
        spec = RecOptimizerSpec(
            model=model, model_blessing=model_blessing, examples=examples,
            optimized_model=types.Channel(type=standard_artifacts.Model),
            custom_ops=int(bool(custom_ops)),
            passes=json.dumps(list(passes)) if passes is not None else None,
            signatures=json.dumps(list(signatures)) if signatures is not None else None,
            precision=precision, rtol=rtol, atol=atol, recall_floor=recall_floor,
            examples_split=examples_split, parity_batch_size=parity_batch_size,
            optimize_options=json.dumps(optimize_options) if optimize_options else None,
            label_key=label_key, max_auc_drop=max_auc_drop, max_logloss_increase=max_logloss_increase,
            metric_examples=metric_examples)
        super().__init__(spec=spec)
