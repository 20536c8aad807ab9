"""An index over a GraphDef: producers, consumers, control edges, order.

Passes edit the GraphDef through this view so the index never goes stale:
every mutation marks it dirty and the next query rebuilds it (graphs here
are thousands of nodes, so a rebuild costs well under a millisecond per 1k).
"""
import collections

import numpy as np
from tensorflow.core.framework import node_def_pb2, types_pb2
from tensorflow.python.framework import op_def_registry, tensor_util

from grappler_passes import shapes
from grappler_passes.attrs import build as build_attrs


_INTEGER_TYPES = frozenset({types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
                            types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
                            types_pb2.DT_BOOL})


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


def scalar_of(node):
    """The one element of a Const NodeDef holding exactly one element,
    whatever its rank ([], [1], [1, 1]), as a Python bool, int, float or
    bytes; None for any other node. Works on function-body nodes too."""
    if node is None or node.op != "Const":
        return None
    value = tensor_util.MakeNdarray(node.attr["value"].tensor)
    return value.reshape(-1)[0].item() if value.size == 1 else None


def op_def_problem(node):
    """What the node's registered OpDef rejects about it, or "" (also for
    ops this process has not registered: nothing to check against)."""
    op_def = op_def_registry.get(node.op)
    if op_def is None:
        return ""
    for spec in op_def.attr:
        if spec.name not in node.attr:
            if spec.HasField("default_value"):
                continue
            return f"attr '{spec.name}' is missing"
        if spec.has_minimum:
            value = node.attr[spec.name]
            size = _list_size(value) if spec.type.startswith("list(") else value.i
            if size < spec.minimum:
                return f"attr '{spec.name}' is {size}, below its minimum {spec.minimum}"
    expected = 0
    for arg in op_def.input_arg:
        if arg.number_attr:
            expected += _attr_or_default(node, op_def, arg.number_attr).i
        elif arg.type_list_attr:
            expected += _list_size(_attr_or_default(node, op_def, arg.type_list_attr))
        else:
            expected += 1
    got = sum(1 for i in node.input if not i.startswith("^"))
    return "" if got == expected else f"{got} data inputs, its OpDef and attrs say {expected}"


def _list_size(value):
    lst = value.list
    return max(len(lst.s), len(lst.i), len(lst.f), len(lst.b), len(lst.type), len(lst.shape), len(lst.tensor),
               len(lst.func))


def _attr_or_default(node, op_def, name):
    if name in node.attr:
        return node.attr[name]
    return next(a.default_value for a in op_def.attr if a.name == name)


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
    def __init__(self, graph_def, protected=(), tensor_info=None):
        self.graph_def = graph_def
        self.protected = set(protected)
        self._dirty = True
        # shapes.tensor_info of this graph (imports it into TensorFlow: the
        # costly step of a pass on a wide model); dropped on any edit, handed
        # by the pipeline to the next pass when a pass changed nothing.
        self._info = tensor_info

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
        self._info = None

    def tensor_info(self):
        """A copy of the cached static shapes and dtypes, tensor -> (dims,
        dtype); a pass may add entries for the nodes it creates."""
        if self._info is None:
            self._info = shapes.tensor_info(self.graph_def)
        return dict(self._info)

    def cached_tensor_info(self):
        """The cached shapes if no edit has happened since, else None."""
        return self._info

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

    def const_scalar(self, tensor):
        """scalar_of the Const behind `tensor` (through Identity), else None:
        broadcasting makes a [1] or [1, 1] constant act as a scalar."""
        return scalar_of(self.node(self.skip_identity(tensor)))

    def const_int(self, tensor):
        """const_scalar of an integer (or bool) Const, as int; None for a
        float one, so an axis or count never comes from a rounded float."""
        node = self.node(self.skip_identity(tensor))
        if node is None or node.op != "Const" or node.attr["dtype"].type not in _INTEGER_TYPES:
            return None
        value = scalar_of(node)
        return None if value is None else int(value)

    # ---- mutation ----------------------------------------------------
    def unique_name(self, base):
        self._index()
        name, i = base, 0
        while name in self._nodes:
            i += 1
            name = f"{base}_{i}"
        return name

    def add_node(self, op, name, inputs=(), attrs=None, device=""):
        """A new node; attrs are Python values or AttrValues (attrs.build)."""
        node = node_def_pb2.NodeDef(op=op, name=self.unique_name(name), input=list(inputs), device=device)
        for key, value in build_attrs(op, attrs).items():
            node.attr[key].CopyFrom(value)
        self.graph_def.node.append(node)
        self.touch()
        return node

    def add_const(self, name, value, dtype=None):
        value = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
        proto = tensor_util.make_tensor_proto(value)
        return self.add_node("Const", name, attrs={"value": proto, "dtype": proto.dtype})

    def rewrite(self, node, op, inputs, attrs):
        """Turns `node` into `op` over `inputs` in place: its name, and so its
        consumers, stay; its control inputs are kept."""
        controls = [i for i in node.input if i.startswith("^")]
        del node.input[:]
        node.op = op
        node.input.extend(list(inputs) + controls)
        node.attr.clear()
        for k, v in build_attrs(op, attrs).items():
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
        """Raises GraphValidityError on dangling inputs, lost protected nodes,
        cycles, or a node its OpDef rejects (attr missing or under its
        minimum, input count off): TensorFlow would refuse the graph later,
        where the pass that broke it could no longer be dropped alone."""
        self._index()
        _check_graph(self, self._nodes)

    def op_histogram(self):
        return dict(collections.Counter(n.op for n in self.graph_def.node))


def add_strided_slice(view, name, tensor, dtype, begin, end, masks=None, device=""):
    """tensor[begin:end] with stride 1 as a StridedSlice over constant int32
    bounds; masks sets begin_mask, end_mask, shrink_axis_mask... bits."""
    bounds = [view.add_const(f"{name}/{k}", np.asarray(v, np.int32)).name
              for k, v in (("begin", begin), ("end", end), ("strides", [1] * len(begin)))]
    attrs = {"T": dtype, "Index": types_pb2.DT_INT32, **(masks or {})}
    return view.add_node("StridedSlice", name, [tensor] + bounds, attrs, device)


def _check_graph(view, nodes):
    for n in view.graph_def.node:
        for inp in n.input:
            if parse_input(inp)[0] not in nodes:
                raise GraphValidityError(f"node '{n.name}' ({n.op}) reads missing node '{inp}'")
        problem = op_def_problem(n)
        if problem:
            raise GraphValidityError(f"node '{n.name}' ({n.op}): {problem}")
    missing = [p for p in view.protected if p not in nodes]
    if missing:
        raise GraphValidityError(f"signature nodes removed: {sorted(missing)}")
    if len(view.topological_order()) != len(view.graph_def.node):
        raise GraphValidityError("graph has a cycle")
