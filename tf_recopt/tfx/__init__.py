"""TFX component: RecOptimizer optimizes each trained model between Trainer
(or Evaluator's blessing) and Pusher, and fails the run when parity fails.

    from tf_recopt.tfx import RecOptimizer
    optimizer = RecOptimizer(model=trainer.outputs["model"],
                             model_blessing=evaluator.outputs["blessing"],
                             examples=example_gen.outputs["examples"])
    pusher = Pusher(model=optimizer.outputs["optimized_model"],
                    model_blessing=evaluator.outputs["blessing"], ...)

Modules: component.py (the spec and the DSL class), executor.py (what runs),
keys.py (channel, parameter and property names),
staging.py (remote artifact URIs through a local directory).
Needs the `tfx` extra (TFX 1.21): `pip install tf-recopt[tfx]`.
"""
import importlib.util

if importlib.util.find_spec("tfx") is None:  # pragma: no cover - only without the extra
    raise ImportError("tf_recopt.tfx needs TFX 1.21: pip install 'tf-recopt[tfx]'")

from tf_recopt.tfx.component import RecOptimizer, RecOptimizerSpec  # noqa: E402
from tf_recopt.tfx.executor import Executor, RecOptimizerError  # noqa: E402

__all__ = ["RecOptimizer", "RecOptimizerSpec", "Executor", "RecOptimizerError"]
