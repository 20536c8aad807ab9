"""Patterns as data, and a matcher that finds their semantic variants.

A pattern node names its op (alternatives as "A|B", "*" for any), a label,
its inputs (sub-patterns, or None for "anything"), whether the matched node
is kept after the rewrite, and optional conditions on the node: `pred`
(node, view) -> bool, with `why` saying what it requires ("{node}" is the
node's name), or `check` (node, view) -> None, or the reason it fails.
Inputs of commutative ops match in either order; Identity/Snapshot nodes
between a consumer and its producer are looked through; a label used twice
must bind the same tensor (a diamond). Matching starts at the pattern's
root (the last op of the subgraph) and walks towards the inputs.

`match` answers yes or no. `require` takes alternatives and raises SkipMatch
with the reason of the candidate that got furthest, so a pass written as
data still reports why a near miss was left alone ("adj_x is set on 'mm'").
"""
import dataclasses
import functools
from typing import Callable, Optional, Sequence

from grappler_passes.pass_base import SkipMatch

COMMUTATIVE = frozenset({"Add", "AddV2", "Mul", "Maximum", "Minimum"})


@functools.lru_cache(maxsize=None)
def _ops(spec):
    return frozenset(spec.split("|"))


@dataclasses.dataclass(frozen=True)
class P:
    op: str
    label: Optional[str] = None
    inputs: Sequence[Optional["P"]] = ()
    keep: bool = False
    pred: Optional[Callable] = None   # pred(node, view) -> bool
    why: Optional[str] = None         # what pred requires, for the skip reason
    check: Optional[Callable] = None  # check(node, view) -> None or the reason it fails

    def ops(self):
        return _ops(self.op)


@dataclasses.dataclass
class Match:
    root: object
    nodes: dict            # label -> NodeDef
    tensors: dict          # label -> tensor name that fed the match at that label
    removed: list          # NodeDefs the rewrite may delete (not keep=True)
    entered: int = 0       # pattern nodes matched so far: how far a failed attempt got
    # ((entered, 1 if the op was right but a condition failed), reason) of
    # the furthest failure: a node of the right op says more than a wrong op.
    failure: tuple = ((-1, 0), "no pattern applies")

    def __getitem__(self, label):
        return self.nodes[label]

    def fail(self, reason, right_op=True):
        if (self.entered, int(right_op)) > self.failure[0]:
            self.failure = ((self.entered, int(right_op)), reason)
        return False


def match(pattern, node, view, bound=None):
    """Returns a Match of `pattern` rooted at `node`, or None. `bound`
    pre-binds labels to tensors (label -> tensor name)."""
    # Most calls offer a node of another op (a pass tries each rule on each
    # node): refused here, before a Match and its failure message are built.
    if pattern.op != "*" and node is not None and node.op not in _ops(pattern.op):
        return None
    m, _ = _attempt(pattern, node, view, bound)
    return m


def require(patterns, node, view, bound=None):
    """The Match of the first of `patterns` (one P or several, longest
    first) rooted at `node`; else raises SkipMatch with the reason of the
    attempt that matched the most pattern nodes before failing."""
    patterns = patterns if isinstance(patterns, (list, tuple)) else (patterns,)
    best = ((-1, 0), f"'{node.name}' ({node.op}) matches no form")
    for pattern in patterns:
        m, failure = _attempt(pattern, node, view, bound)
        if m is not None:
            return m
        best = max(best, failure, key=lambda f: f[0])
    roots = set().union(*(p.ops() for p in patterns))
    if node.op not in roots and "*" not in roots:   # no alternative got past the root: name them all
        raise SkipMatch(f"'{node.name}' is {node.op}, not {' or '.join(sorted(roots))}")
    raise SkipMatch(best[1])


def _attempt(pattern, node, view, bound):
    state = Match(root=node, nodes={}, tensors={}, removed=[])
    for label, tensor in (bound or {}).items():
        state.nodes[label] = view.node(tensor)
        state.tensors[label] = tensor
    if _match(pattern, node, node.name, view, state):
        return state, None
    return None, state.failure


def _match(p, node, tensor, view, state):
    if node is None:
        return state.fail(f"'{tensor}' has no producer node{_at(p)}", right_op=False)
    if p.op != "*" and node.op not in p.ops():
        return state.fail(f"'{node.name}' is {node.op}, not {' or '.join(sorted(p.ops()))}{_at(p)}", right_op=False)
    if p.label is not None and p.label in state.tensors:
        bound = state.tensors[p.label]
        if view.source(bound) != view.source(tensor):
            return state.fail(f"'{tensor}' is not the same tensor as {p.label} '{bound}'")
        return True
    if p.pred is not None and not p.pred(node, view):
        return state.fail((p.why or "'{node}' fails " + getattr(p.pred, "__name__", "its condition"))
                          .format(node=node.name))
    if p.check is not None:
        reason = p.check(node, view)
        if reason is not None:
            return state.fail(reason)
    snapshot = _save(state)
    state.entered += 1
    if p.label is not None:
        state.nodes[p.label] = node
        state.tensors[p.label] = tensor
    if not p.keep:
        state.removed.append(node)
    inputs = view.data_inputs(node)
    if len(p.inputs) > len(inputs):
        state.fail(f"'{node.name}' has {len(inputs)} inputs, not {len(p.inputs)}")
        _restore(state, snapshot)
        return False
    orders = [list(range(len(p.inputs)))]
    if node.op in COMMUTATIVE and len(p.inputs) == 2:
        orders.append([1, 0])
    for order in orders:
        inner = _save(state)
        if all(_match_input(p.inputs[k], inputs[order[k]], view, state) for k in range(len(p.inputs))):
            return True
        _restore(state, inner)
    _restore(state, snapshot)
    return False


def _at(p):
    return f" (the pattern's {p.label})" if p.label else ""


def _match_input(p, tensor, view, state):
    if p is None:
        return True
    tensor = view.skip_identity(tensor)
    return _match(p, view.node(tensor), tensor, view, state)


def _save(state):
    return dict(state.nodes), dict(state.tensors), list(state.removed), state.entered


def _restore(state, snapshot):
    state.nodes, state.tensors, state.removed = dict(snapshot[0]), dict(snapshot[1]), list(snapshot[2])
    state.entered = snapshot[3]


def safe_to_fuse(m, view):
    """Design rule 3: no removed node (other than the root, whose uses are
    rewired) may be used outside the match, be a signature node, or have
    control dependents. A kept root (rewritten in place) counts as inside.
    Returns None if safe, else the reason."""
    inside = {n.name for n in m.removed} | {m.root.name}
    for n in m.removed:
        if n.name in view.protected:
            return f"'{n.name}' is a signature input/output"
        if view.control_consumers(n.name):
            return f"'{n.name}' has control dependents"
        if n is m.root:
            continue
        for consumer, _ in view.consumers(n.name):
            if consumer.name not in inside:
                return f"'{n.name}' is also used by '{consumer.name}' outside the fused subgraph"
    return None


def require_safe(m, view):
    """safe_to_fuse for a plan: raises SkipMatch with the reason."""
    reason = safe_to_fuse(m, view)
    if reason is not None:
        raise SkipMatch(reason)
