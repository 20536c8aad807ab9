"""Options of optimize(), with their defaults in one place."""
import dataclasses
from typing import Any, Mapping, Optional, Sequence, Union

from grappler_passes.pass_base import COMPONENT_PRECISIONS, EXACT_RETRIEVAL, resolve_precision

PRECISIONS = ("fp32", "bf16", "int8", "bf16_approx", "int8_approx")
# Parity tolerances when the caller gives none: bf16 weights carry 8
# significant bits, so outputs move by ~1e-3 relative (measured on the zoo).
# int8_approx: retrieval scores move by about 1e-2 relative (per-row scales
# over 64 dims), and ids are held to recall_floor. int8 dense layers and tables
# moved the small zoo's ranking outputs by 6e-5 to 2.6e-3 and bench.mlp's by
# 3.8e-3 (its max abs column), but two 512-wide int8 layers with no narrow
# head by up to 5.7e-2 (bench.dense_variants): optimize() then falls back.
# Exact retrieval (int8/bf16 scan, fp32 rescoring) gives the fp32 scan's
# scores, so it is held to fp32's tolerance.
DEFAULT_TOLERANCE = {"fp32": (1e-4, 1e-5), "bf16": (2e-2, 5e-3), "int8": (5e-2, 5e-2),
                     "bf16_approx": (2e-2, 5e-3), "int8_approx": (5e-2, 5e-2)}


def tolerance_of(component, precision):
    if component == "retrieval" and precision in EXACT_RETRIEVAL:
        return DEFAULT_TOLERANCE["fp32"]
    return DEFAULT_TOLERANCE[precision]
# "gpu": only rewrites whose ops have GPU kernels (custom_ops/kernels/*.cu.cc),
# within the GPU kernels' limits; parity is checked wherever optimize() runs.
DEVICES = ("cpu", "gpu")


@dataclasses.dataclass
class OptimizeOptions:
    signatures: Optional[Sequence[str]] = None   # None: every signature
    custom_ops: bool = True                      # False: stock TF ops only (unmodified TF Serving)
    passes: Optional[Sequence[str]] = None       # None: grappler_passes.DEFAULT_ORDER
    validate: bool = True
    sample_inputs: Any = None                    # dict of arrays (per signature or shared) or tf.Example TFRecord file(s)
    rtol: Optional[float] = None                 # None: DEFAULT_TOLERANCE[precision]
    atol: Optional[float] = None
    # Variables up to this size are frozen into constants so passes can fold
    # and pre-pack them; larger ones (embedding tables) stay variables.
    freeze_max_bytes: int = 16 << 20
    # Embedding tables stay variables unless this small: a large table
    # gains nothing frozen (a lookup reads a few rows) and would bloat the
    # GraphDef; a small one saves a variable read per call (batch 1).
    freeze_table_max_bytes: int = 256 << 10
    # Cap on all frozen constants together, far below GraphDef's 2 GiB limit.
    freeze_total_bytes: int = 256 << 20
    parity_batch_size: int = 8
    seed: int = 0
    # One of PRECISIONS for every component, or per component: a mapping
    # {"dense": "int8", "retrieval": "fp32"} or the string
    # "dense=int8,retrieval=fp32" (the CLI's and TFX's spelling).
    precision: Union[str, Mapping[str, str]] = "fp32"
    # Components optimize() moved back to fp32 after their int8 form broke
    # parity under the plain precision="int8" (report.precision_fallbacks).
    fp32_components: Sequence[str] = ()
    # Retrieval outputs (top-k ids from a fused score+top-k) are compared as
    # sets: optimize() refuses to write when mean recall@k falls below this.
    recall_floor: float = 0.99
    device: str = "cpu"
    # Labelled examples (tf_recopt/accuracy.py): with sample_inputs as
    # TFRecords holding this feature (or {output: feature}), per-example
    # probability outputs are judged by AUC and logloss over up to
    # metric_examples records instead of element-wise tolerance.
    label_key: Optional[Union[str, Mapping[str, str]]] = None
    max_auc_drop: float = 0.0005           # absolute
    max_logloss_increase: float = 0.001    # relative to the original's logloss
    metric_examples: int = 4096

    def precision_for(self, component):
        return "fp32" if component in self.fp32_components else resolve_precision(self.precision, component)

    def validate_fields(self):
        self.precision = parse_precision(self.precision)
        # The loosest component's tolerance: the outputs carry all of them.
        rtol, atol = max(tolerance_of(c, self.precision_for(c)) for c in COMPONENT_PRECISIONS)
        self.rtol = rtol if self.rtol is None else self.rtol
        self.atol = atol if self.atol is None else self.atol
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r}: supported {DEVICES}")
        if not 0.0 <= self.recall_floor <= 1.0:
            raise ValueError(f"recall_floor={self.recall_floor}: must be in [0, 1]")
        if self.rtol < 0 or self.atol < 0:
            raise ValueError("rtol and atol must be >= 0")
        if self.max_auc_drop < 0 or self.max_logloss_increase < 0 or self.metric_examples < 2:
            raise ValueError("max_auc_drop and max_logloss_increase must be >= 0, metric_examples >= 2")
        if self.label_key is not None and self.sample_inputs is None:
            raise ValueError(f"label_key={self.label_key!r} needs sample_inputs: tf.Example TFRecords holding it")
        if min(self.freeze_max_bytes, self.freeze_total_bytes, self.freeze_table_max_bytes) < 0:
            raise ValueError("freeze_max_bytes, freeze_table_max_bytes and freeze_total_bytes must be >= 0")


def parse_precision(value):
    """A plain precision, or a {component: precision} dict from a mapping or
    from "component=precision,..."; ValueError naming what is wrong."""
    if isinstance(value, str) and "=" not in value:
        if value not in PRECISIONS:
            raise ValueError(f"precision={value!r}: supported {PRECISIONS}, or per component "
                             f"{sorted(COMPONENT_PRECISIONS)} as 'dense=int8,retrieval=fp32'")
        return value
    if isinstance(value, str):
        pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"precision={value!r}: write component=precision pairs, e.g. 'dense=int8,retrieval=fp32'")
        value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, Mapping):
        raise ValueError(f"precision={value!r}: a string or a mapping of component to precision")
    for component, p in value.items():
        if component not in COMPONENT_PRECISIONS:
            raise ValueError(f"precision: unknown component {component!r}; known {sorted(COMPONENT_PRECISIONS)}")
        if p not in COMPONENT_PRECISIONS[component]:
            raise ValueError(f"precision: {component}={p!r}; {component} supports {COMPONENT_PRECISIONS[component]}")
    return dict(value)
