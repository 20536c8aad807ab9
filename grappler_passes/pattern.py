"""Patterns as data, and a matcher that finds their semantic variants.

A pattern node names its op (alternatives as "A|B", "*" for any), a label,
its inputs (sub-patterns, or None for "anything"), whether the matched node
is kept after the rewrite, and an optional predicate. Inputs of commutative
ops match in either order; Identity/Snapshot nodes between a consumer and
its producer are looked through; a label used twice must bind the same node
(a diamond). Matching starts at the pattern's root (the last op of the
subgraph) and walks towards the inputs.
"""
import dataclasses
from typing import Callable, Optional, Sequence

COMMUTATIVE = frozenset({"Add", "AddV2", "Mul", "Maximum", "Minimum"})


@dataclasses.dataclass(frozen=True)
class P:
    op: str
    label: Optional[str] = None
    inputs: Sequence[Optional["P"]] = ()
    keep: bool = False
    pred: Optional[Callable] = None  # pred(node, view) -> bool

    def ops(self):
        return frozenset(self.op.split("|"))


@dataclasses.dataclass
class Match:
    root: object
    nodes: dict            # label -> NodeDef
    tensors: dict          # label -> tensor name that fed the match at that label
    removed: list          # NodeDefs the rewrite may delete (not keep=True)

    def __getitem__(self, label):
        return self.nodes[label]


def match(pattern, node, view):
    """Returns a Match of `pattern` rooted at `node`, or None."""
    state = Match(root=node, nodes={}, tensors={}, removed=[])
    if _match(pattern, node, node.name, view, state):
        return state
    return None


def _match(p, node, tensor, view, state):
    if node is None:
        return False
    if p.op != "*" and node.op not in p.ops():
        return False
    if p.label is not None:
        bound = state.nodes.get(p.label)
        if bound is not None:
            return bound.name == node.name
    if p.pred is not None and not p.pred(node, view):
        return False
    snapshot = (dict(state.nodes), dict(state.tensors), list(state.removed))
    if p.label is not None:
        state.nodes[p.label] = node
        state.tensors[p.label] = tensor
    if not p.keep:
        state.removed.append(node)
    inputs = view.data_inputs(node)
    if len(p.inputs) > len(inputs):
        _restore(state, snapshot)
        return False
    orders = [list(range(len(p.inputs)))]
    if node.op in COMMUTATIVE and len(p.inputs) == 2:
        orders.append([1, 0])
    for order in orders:
        inner = (dict(state.nodes), dict(state.tensors), list(state.removed))
        if all(_match_input(p.inputs[k], inputs[order[k]], view, state) for k in range(len(p.inputs))):
            return True
        _restore(state, inner)
    _restore(state, snapshot)
    return False


def _match_input(p, tensor, view, state):
    if p is None:
        return True
    tensor = view.skip_identity(tensor)
    return _match(p, view.node(tensor), tensor, view, state)


def _restore(state, snapshot):
    state.nodes, state.tensors, state.removed = dict(snapshot[0]), dict(snapshot[1]), list(snapshot[2])


def safe_to_fuse(m, view):
    """Design rule 3: no removed node (other than the root, whose uses are
    rewired) may be used outside the match, be a signature node, or have
    control dependents. Returns None if safe, else the reason."""
    inside = {n.name for n in m.removed}
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
    from grappler_passes.pass_base import SkipMatch  # pass_base is below pattern; imported here to keep it light
    reason = safe_to_fuse(m, view)
    if reason is not None:
        raise SkipMatch(reason)
