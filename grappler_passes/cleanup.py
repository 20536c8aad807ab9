"""Identity/NoOp pruning and dead-node removal."""
from grappler_passes.graph_view import parse_input
from grappler_passes.pass_base import GraphPass

_FORWARDING = frozenset({"Identity", "Snapshot", "StopGradient", "PreventGradient"})


def _inert(view, node, depth=0):
    """True if waiting on `node` orders nothing: a Const, an Identity of a
    feed (a placeholder: an input or a variable handle) or of a Const (a
    frozen table), or a NoOp waiting
    only on such nodes. An inlined function call waits on its inputs this
    way (its input_control_node), which hides the handles behind it from
    passes that follow Identity chains to a table."""
    if node is None or depth > 8:
        return False
    if node.op == "Const":
        return True
    if node.op == "NoOp":
        return all(i.startswith("^") and _inert(view, view.node(i[1:]), depth + 1) for i in node.input)
    if node.op == "Identity" and len(node.input) == 1:
        source = view.node(view.skip_identity(node.input[0]).split(":")[0])
        return source is not None and source.op in ("Placeholder", "Const")
    return False


def _bypass(view, forward):
    """Points each data use of a forward's output at what it forwards,
    through chains of forwards."""
    def source(tensor):
        seen = 0
        name, port = parse_input(tensor)
        while port == 0 and name in forward and seen <= len(forward):
            tensor, seen = forward[name], seen + 1
            name, port = parse_input(tensor)
        return tensor
    for node in view.nodes():
        for i, inp in enumerate(node.input):
            if not inp.startswith("^") and parse_input(inp)[0] in forward:
                node.input[i] = source(inp)
    view.touch()


class PruneIdentity(GraphPass):
    """  x -> Identity -> y   ==>   x -> y

    Skips Identity nodes that are signature outputs, carry control inputs,
    or are control dependencies of others (they order side effects). NoOps
    with no control dependents are dropped with them.
    """

    name = "prune_identity"
    prune_after = False
    description = "remove Identity/Snapshot/StopGradient and unused NoOp nodes"

    def run(self, ctx, result):
        view = ctx.view
        self._drop_inert_control_edges(view)
        # Whether a forward may go does not depend on the others going, so
        # all are decided first and every use is redirected in one sweep:
        # one replace_uses per Identity rescanned and re-indexed the graph
        # each time, quadratic in a model's thousands of Identities.
        forward, doomed = {}, []
        for node in view.nodes():
            if node.op in _FORWARDING and not self._keep_reason(node, view):
                forward[node.name] = node.input[0]
            elif node.op == "NoOp" and not view.control_consumers(node.name) and node.name not in view.protected:
                doomed.append(node.name)
        _bypass(view, forward)
        result.matched = result.applied = len(forward) + len(doomed)
        view.remove_nodes(list(forward) + doomed)

    @staticmethod
    def _drop_inert_control_edges(view):
        """A control edge from a Const, or from a NoOp that waits on nothing
        that matters, orders nothing (frozen ReadVariableOps and inlined
        function calls leave many of these behind)."""
        # One answer per node and sweep, not per edge (per edge it cost ~1 s
        # on DeepCTR's FiBiNET). Inert stays inert as edges go; not inert
        # may turn inert once a long NoOp chain (past _inert's depth) has
        # lost its edges, so those are asked again in the next sweep.
        inert_known = set()
        changed = True
        while changed:
            changed = False
            not_inert = set()

            def inert(name):
                if name in inert_known:
                    return True
                if name in not_inert:
                    return False
                (inert_known if _inert(view, view.node(name)) else not_inert).add(name)
                return name in inert_known
            for node in view.nodes():
                kept = [i for i in node.input if not (i.startswith("^") and inert(i[1:]))]
                if len(kept) != len(node.input):
                    del node.input[:]
                    node.input.extend(kept)
                    changed = True
            view.touch()

    @staticmethod
    def _keep_reason(node, view):
        if node.name in view.protected:
            return "signature node"
        if view.has_control_inputs(node) or view.control_consumers(node.name):
            return "control dependency"
        if len(view.data_inputs(node)) != 1:
            return "not a single-input forward"
        return ""


def _writes_variables(view):
    return any(n.op.startswith(("Assign", "ResourceScatter", "ResourceApply")) for n in view.nodes())


def _drop_edges_from_unused_reads(view):
    """A ReadVariableOp whose value a rewrite stopped using is still waited
    on by the inlined function's output control node (automatic control
    dependencies), which would keep it, and so its variable, in the saved
    model. With no write in the graph, waiting on a read orders nothing."""
    if _writes_variables(view):
        return
    unused = {n.name for n in view.nodes() if n.op == "ReadVariableOp" and not view.consumers(n.name)
              and n.name not in view.protected}
    if not unused:
        return
    for node in view.nodes():
        kept = [i for i in node.input if not (i.startswith("^") and i[1:] in unused)]
        if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)
    view.touch()


class PruneDeadNodes(GraphPass):
    """Removes nodes from which no signature output is reachable (by data or
    control edges). Function bodies are untouched."""

    name = "prune_dead_nodes"
    prune_after = False
    description = "remove nodes no signature output depends on"

    def run(self, ctx, result):
        result.matched = result.applied = prune_dead(ctx.view)


def prune_dead(view):
    """Removes the dead nodes; returns how many. The pipeline also calls it
    after every pass that applied a rewrite: a dead consumer still counts as
    a use and would block the next fusion."""
    _drop_edges_from_unused_reads(view)
    live = view.live_nodes()
    dead = [n.name for n in view.nodes() if n.name not in live]
    view.remove_nodes(dead)
    return len(dead)
