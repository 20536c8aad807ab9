"""The node index under GraphView: name -> node and tensor -> consumers,
kept up to date by GraphView's edits instead of being rebuilt after each
(a wide model's fusions make thousands of edits; a rebuild after each made
the passes quadratic in the graph's size). Code that edits a NodeDef
directly calls view.touch(), which drops the index until the next query.
With RECOPT_CHECK_INDEX=1 (the test suite) every validate() compares the
kept index with a fresh one."""
import collections
import os

CHECK_INDEX = os.environ.get("RECOPT_CHECK_INDEX") == "1"


class GraphValidityError(ValueError):
    """The graph refers to a missing node or has a cycle."""


def parse_input(name):
    """'^a' -> ('a', -1); 'a:1' -> ('a', 1); 'a' -> ('a', 0)."""
    if name.startswith("^"):
        return name[1:], -1
    node, _, port = name.partition(":")
    return node, int(port) if port else 0


class NodeIndex:
    # Full index rebuilds, all views together: tests check that a pass's
    # rebuilds do not grow with the number of rewrites it makes.
    full_rebuilds = 0

    def __init__(self, graph_def, protected=()):
        self._graph_def = graph_def
        self.protected = set(protected)
        self._dirty = True
        self._info = None   # GraphView's cached shapes, dropped with any edit
        self.edits = 0      # edits so far: the pipeline skips validating a graph no edit touched

    @property
    def graph_def(self):
        return self._graph_def

    def node(self, name):
        self._index()
        return self._nodes.get(parse_input(name)[0])

    def nodes(self):
        return list(self.graph_def.node)

    def consumers(self, name, port=None):
        """(consumer NodeDef, input index) for data uses of `name` (one port, or all)."""
        self._index()
        return [(n, i) for n, i, p in self._consumers.get(name, ())
                if p >= 0 and (port is None or p == port)]

    def control_consumers(self, name):
        self._index()
        return [n for n, _, p in self._consumers.get(name, ()) if p < 0]

    def _index(self):
        if not self._dirty:
            return
        NodeIndex.full_rebuilds += 1
        self._nodes = {n.name: n for n in self.graph_def.node}
        self._consumers = collections.defaultdict(list)
        for n in self.graph_def.node:
            for i, inp in enumerate(n.input):
                src, port = parse_input(inp)
                self._consumers[src].append((n, i, port))
        self._dirty = False

    def touch(self):
        self._dirty = True
        self._edited()

    def _edited(self):
        self.edits += 1
        self._info = None

    def _indexed(self, node):
        return not self._dirty and self._nodes.get(node.name) is node

    def _link(self, node):
        for i, inp in enumerate(node.input):
            src, port = parse_input(inp)
            self._consumers[src].append((node, i, port))

    def _unlink(self, node):
        for inp in set(node.input):
            src = parse_input(inp)[0]
            entries = self._consumers.get(src)
            if entries:
                self._consumers[src] = [e for e in entries if e[0].name != node.name]

    def check_index(self):
        """With RECOPT_CHECK_INDEX=1 (the test suite): raises unless the
        incrementally kept index equals a fresh one."""
        if not CHECK_INDEX or self._dirty:
            return
        fresh = collections.defaultdict(set)
        for n in self.graph_def.node:
            for i, inp in enumerate(n.input):
                src, port = parse_input(inp)
                fresh[src].add((n.name, i, port))
        kept = {src: {(n.name, i, p) for n, i, p in entries} for src, entries in self._consumers.items() if entries}
        if {k: v for k, v in fresh.items() if v} != kept or set(self._nodes) != {n.name for n in self.graph_def.node}:
            raise GraphValidityError("the view's index is out of date: a pass edited a node without view.touch()")

    def live_nodes(self):
        """Names of the nodes some signature output depends on (by data or control edges)."""
        live = set()
        queue = collections.deque(p for p in self.protected if self.node(p) is not None)
        while queue:
            name = queue.popleft()
            if name in live:
                continue
            live.add(name)
            for inp in self.node(name).input:
                queue.append(parse_input(inp)[0])
        return live

    def topological_order(self):
        self._index()
        indegree = {n.name: 0 for n in self.graph_def.node}
        for n in self.graph_def.node:
            for inp in n.input:
                if parse_input(inp)[0] in indegree:
                    indegree[n.name] += 1
        ready = collections.deque(name for name, d in indegree.items() if d == 0)
        order = []
        while ready:
            name = ready.popleft()
            order.append(self._nodes[name])
            for consumer, _, _ in self._consumers.get(name, ()):
                indegree[consumer.name] -= 1
                if indegree[consumer.name] == 0:
                    ready.append(consumer.name)
        return order
