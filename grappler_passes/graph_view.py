"""An index over a GraphDef: producers, consumers, control edges, order.

Passes edit the GraphDef through this view so the index never goes stale:
every mutation marks it dirty and the next query rebuilds it (graphs here
are thousands of nodes, so a rebuild costs well under a millisecond per 1k).
"""
import collections

import numpy as np
from tensorflow.core.framework import attr_value_pb2, node_def_pb2, types_pb2
from tensorflow.python.framework import op_def_registry, tensor_util


class GraphValidityError(ValueError):
    """The graph refers to a missing node or has a cycle."""


def parse_input(name):
    """'^a' -> ('a', -1); 'a:1' -> ('a', 1); 'a' -> ('a', 0)."""
    if name.startswith("^"):
        return name[1:], -1
    node, _, port = name.partition(":")
    return node, int(port) if port else 0


def is_stateful(op):
    """True for ops whose output is not a function of their inputs (variable
    reads, random ops) and for ops this TensorFlow does not know."""
    op_def = op_def_registry.get(op)
    return op_def is None or op_def.is_stateful


def public_attrs(node):
    """The attrs that define what a node computes (not _class, _output_shapes...)."""
    return {k: v for k, v in node.attr.items() if not k.startswith("_")}


def tensor_name(node, port=0):
    return node if port == 0 else f"{node}:{port}"


def _drop_colocation_with(nodes, removed):
    """Strips `_class` colocation hints naming removed nodes (inlined tf_keras
    GRU/LSTM calls colocate the inputs with call-frame Identity nodes):
    TensorFlow refuses to import a graph whose hints name missing nodes."""
    for node in nodes:
        if "_class" not in node.attr:
            continue
        hints = list(node.attr["_class"].list.s)
        kept = [h for h in hints if h.decode().removeprefix("loc:@") not in removed]
        if len(kept) == len(hints):
            continue
        if kept:
            del node.attr["_class"].list.s[:]
            node.attr["_class"].list.s.extend(kept)
        else:
            del node.attr["_class"]


class GraphView:
    def __init__(self, graph_def, protected=()):
        self.graph_def = graph_def
        self.protected = set(protected)
        self._dirty = True

    # ---- index -------------------------------------------------------
    def _index(self):
        if not self._dirty:
            return
        self._nodes = {n.name: n for n in self.graph_def.node}
        self._consumers = collections.defaultdict(list)
        for n in self.graph_def.node:
            for i, inp in enumerate(n.input):
                src, port = parse_input(inp)
                self._consumers[src].append((n, i, port))
        self._dirty = False

    def touch(self):
        self._dirty = True

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

    def data_inputs(self, node):
        return [i for i in node.input if not i.startswith("^")]

    def has_control_inputs(self, node):
        return any(i.startswith("^") for i in node.input)

    def producer(self, node, index=0):
        """The NodeDef feeding data input `index` of `node`."""
        return self.node(self.data_inputs(node)[index])

    # ---- constants ---------------------------------------------------
    def skip_identity(self, name):
        """Follows Identity chains back to the real producer's tensor name."""
        node = self.node(name)
        while node is not None and node.op in ("Identity", "Snapshot") and not self.has_control_inputs(node):
            name = node.input[0]
            node = self.node(name)
        return name

    def source(self, tensor):
        """The real producer's output behind Identity chains, spelt one way ("n" for "n:0")."""
        return tensor_name(*parse_input(self.skip_identity(tensor)))

    def const_value(self, name):
        """numpy value of a Const (through Identity), else None."""
        node = self.node(self.skip_identity(name))
        if node is None or node.op != "Const":
            return None
        return tensor_util.MakeNdarray(node.attr["value"].tensor)

    # ---- mutation ----------------------------------------------------
    def unique_name(self, base):
        self._index()
        name, i = base, 0
        while name in self._nodes:
            i += 1
            name = f"{base}_{i}"
        return name

    def add_node(self, op, name, inputs=(), attrs=None, device=""):
        node = node_def_pb2.NodeDef(op=op, name=self.unique_name(name), input=list(inputs), device=device)
        for key, value in (attrs or {}).items():
            node.attr[key].CopyFrom(value)
        self.graph_def.node.append(node)
        self.touch()
        return node

    def add_const(self, name, value, dtype=None):
        value = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
        proto = tensor_util.make_tensor_proto(value)
        return self.add_node("Const", name, attrs={
            "value": attr_value_pb2.AttrValue(tensor=proto),
            "dtype": attr_value_pb2.AttrValue(type=proto.dtype),
        })

    def add_strided_slice(self, name, tensor, dtype, begin, end, masks=None, device=""):
        """tensor[begin:end] with stride 1 as a StridedSlice over constant
        int32 bounds; masks sets begin_mask, end_mask, shrink_axis_mask... bits."""
        bounds = [self.add_const(f"{name}/{k}", np.asarray(v, np.int32)).name
                  for k, v in (("begin", begin), ("end", end), ("strides", [1] * len(begin)))]
        attrs = {"T": attr_value_pb2.AttrValue(type=dtype), "Index": attr_value_pb2.AttrValue(type=types_pb2.DT_INT32)}
        attrs.update({k: attr_value_pb2.AttrValue(i=v) for k, v in (masks or {}).items()})
        return self.add_node("StridedSlice", name, [tensor] + bounds, attrs, device)

    def rewrite(self, node, op, inputs, attrs):
        """Turns `node` into `op` over `inputs` in place: its name, and so its
        consumers, stay; its control inputs are kept."""
        controls = [i for i in node.input if i.startswith("^")]
        del node.input[:]
        node.op = op
        node.input.extend(list(inputs) + controls)
        node.attr.clear()
        for k, v in attrs.items():
            node.attr[k].CopyFrom(v)
        self.touch()

    def replace_uses(self, old, new):
        """Points every data use of tensor `old` at tensor `new`."""
        old_node, old_port = parse_input(old)
        for n in self.graph_def.node:
            for i, inp in enumerate(n.input):
                if not inp.startswith("^") and parse_input(inp) == (old_node, old_port):
                    n.input[i] = new
        self.touch()

    def remove_nodes(self, names):
        names = set(names)
        kept = [n for n in self.graph_def.node if n.name not in names]
        del self.graph_def.node[:]
        self.graph_def.node.extend(kept)
        _drop_colocation_with(self.graph_def.node, names)
        self.touch()

    def removable(self, name, allowed_consumers=()):
        """True if `name` is not protected and only `allowed_consumers` use it."""
        if name in self.protected:
            return False
        if self.control_consumers(name):
            return False
        return all(c.name in allowed_consumers for c, _ in self.consumers(name))

    # ---- whole-graph checks -----------------------------------------
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

    def validate(self):
        """Raises GraphValidityError on dangling inputs, lost protected nodes or cycles."""
        self._index()
        for n in self.graph_def.node:
            for inp in n.input:
                if parse_input(inp)[0] not in self._nodes:
                    raise GraphValidityError(f"node '{n.name}' ({n.op}) reads missing node '{inp}'")
        missing = [p for p in self.protected if p not in self._nodes]
        if missing:
            raise GraphValidityError(f"signature nodes removed: {sorted(missing)}")
        if len(self.topological_order()) != len(self.graph_def.node):
            raise GraphValidityError("graph has a cycle")

    def op_histogram(self):
        return dict(collections.Counter(n.op for n in self.graph_def.node))
