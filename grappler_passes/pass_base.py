"""The interface every pass implements, and the stats it reports."""
import dataclasses
from typing import List, Tuple

from tensorflow.core.framework import types_pb2


# The parts of a model `precision` can name, and what each may be.
COMPONENT_PRECISIONS = {
    "dense": ("fp32", "bf16", "int8"),      # FusedMLP, GRU, multi-head attention weights
    "embedding": ("fp32", "bf16", "int8"),  # fused embedding lookups' tables (int8: 8-bit row-wise)
    # fused score + top-k candidates: int8/bf16 scan, then exact fp32
    # rescoring (Recopt>ExactScoreTopK); *_approx: the scan's own answer
    "retrieval": ("fp32", "bf16", "int8", "bf16_approx", "int8_approx"),
}
# Retrieval precisions whose answer is the fp32 scan's, ids and scores.
EXACT_RETRIEVAL = ("bf16", "int8")


def resolve_precision(precision, component):
    """The precision one component gets from optimize()'s `precision`: a
    mapping names each component (absent ones stay fp32); a plain string
    applies to every component."""
    if isinstance(precision, str):
        if precision not in COMPONENT_PRECISIONS[component]:
            precision = precision.removesuffix("_approx")  # "int8_approx": int8, retrieval approximate
        return precision if precision in COMPONENT_PRECISIONS[component] else "fp32"
    return precision.get(component, "fp32")


class SkipMatch(Exception):
    """Raised by a matcher for a candidate that cannot be fused; the pass
    records str(exc) as the skip reason (PassResult.skip)."""


class NoMatch(Exception):
    """Raised by a matcher whose anchor does not start the pattern at all:
    nothing worth a skip record."""


@dataclasses.dataclass
class PassContext:
    view: object                 # GraphView over the signature's GraphDef
    custom_ops: bool = True      # False: stock TensorFlow ops only
    options: object = None       # tf_recopt.options.OptimizeOptions, or None in unit tests
    # Captured resource placeholders (node name) -> (shape, dtype name) of the
    # variable behind them: graphs carry no shapes for resources.
    resources: dict = dataclasses.field(default_factory=dict)
    # The same placeholders -> the tf.Variable itself, for passes that
    # re-encode a variable's value (fuse_topk's int8/bf16 candidates). Read
    # only: a variable a pass creates goes to new_variables.
    variables: dict = dataclasses.field(default_factory=dict)
    # Placeholders this pass added for variables it created (a table
    # re-encoded as bfloat16) -> the variable; the pipeline moves them into
    # PassResult.new_variables when the pass succeeds, and the saved model
    # captures them.
    new_variables: dict = dataclasses.field(default_factory=dict)
    # Values derived from the model's variables, shared by every signature
    # (and pass) of one optimize() call so that each is made once:
    # (kind, id(variable)) -> value.
    derived: dict = dataclasses.field(default_factory=dict)

    def precision(self, component):
        """resolve_precision of the options' precision; fp32 without options
        and for a component optimize() moved back to fp32."""
        if component in getattr(self.options, "fp32_components", ()):
            return "fp32"
        return resolve_precision(getattr(self.options, "precision", "fp32") or "fp32", component)

    def add_variable_handle(self, name, variable):
        """A resource Placeholder for `variable` (one a pass created), which
        the saved model captures; returns the placeholder's node name."""
        node = self.view.add_node("Placeholder", name, attrs={
            "dtype": types_pb2.DT_RESOURCE,
            "shape": []})
        self.new_variables[node.name] = variable
        return node.name


@dataclasses.dataclass
class PassResult:
    name: str
    matched: int = 0
    applied: int = 0
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (node, reason)
    error: str = ""
    nodes_before: int = 0
    nodes_after: int = 0
    pruned: int = 0          # dead nodes the pipeline removed after this pass
    # Variables the pass created: their placeholder node -> tf.Variable.
    new_variables: dict = dataclasses.field(default_factory=dict, repr=False)
    seconds: float = 0.0

    def skip(self, node, reason):
        self.matched += 1
        self.skipped.append((node, reason))

    def apply(self):
        self.matched += 1
        self.applied += 1

    def to_dict(self):
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "new_variables"}
        d["skipped"] = [{"node": n, "reason": r} for n, r in self.skipped]
        d["new_variables"] = sorted(self.new_variables)
        return d


class GraphPass:
    """A rewrite. Subclasses set `name` and implement run(ctx, result)."""

    name = ""
    requires_custom_ops = False
    # False for the cleanup passes themselves; any other pass that applies a
    # rewrite is followed by dead-node pruning (pipeline.run_pipeline).
    prune_after = True
    # False where the ops a pass emits have no GPU kernel: optimize(device="gpu")
    # leaves it out rather than pin part of the model to the CPU.
    gpu_kernels = True
    description = ""

    def run(self, ctx, result):
        raise NotImplementedError


def apply_plans(view, result, found, make_plan):
    """The plan-then-emit loop of a matcher pass: `found` holds (anchor node,
    match) pairs; make_plan(view, info, match) reads the graph and returns a
    plan with emit(view), or raises SkipMatch, reported against the anchor.
    The shape table is only built when something was found: inferring the
    whole graph's shapes is most of a pass's time on a model without the form."""
    if not found:
        return
    info = view.tensor_info()
    for node, m in found:
        try:
            plan = make_plan(view, info, m)
        except SkipMatch as why:
            result.skip(node.name, str(why))
            continue
        plan.emit(view)
        result.apply()
