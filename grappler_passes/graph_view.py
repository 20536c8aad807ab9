"""GraphView: what a pass reads and edits a GraphDef through.

Queries (node, consumers, topological order) come from the NodeIndex, which
the view's own edits (add_node, rewrite, replace_uses, remove_nodes) keep
current; a pass that edits a NodeDef directly calls view.touch(), and the
next query rebuilds the index. Constants are read through Identity chains;
static shapes are cached until the next edit; validate() checks the graph
(and every node against its OpDef) after each pass.
"""
import collections

import numpy as np
from tensorflow.core.framework import node_def_pb2, types_pb2
from tensorflow.python.framework import op_def_registry, tensor_util

from grappler_passes import shapes
from grappler_passes.attrs import build as build_attrs
from grappler_passes.graph_index import GraphValidityError, NodeIndex, parse_input  # noqa: F401 (re-exported)


_INTEGER_TYPES = frozenset({types_pb2.DT_INT8, types_pb2.DT_INT16, types_pb2.DT_INT32, types_pb2.DT_INT64,
                            types_pb2.DT_UINT8, types_pb2.DT_UINT16, types_pb2.DT_UINT32, types_pb2.DT_UINT64,
                            types_pb2.DT_BOOL})


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


class GraphView(NodeIndex):
    """The index (NodeIndex: node, consumers, order), constants, shapes and
    the edits passes make, which keep the index current."""

    # Scans of the GraphDef to delete removed nodes, all views together:
    # tests check that a pass's scans do not grow with its removals.
    deletion_scans = 0

    def __init__(self, graph_def, protected=(), tensor_info=None):
        super().__init__(graph_def, protected)
        self._pending_removals = {}
        # shapes.tensor_info of this graph (imports it into TensorFlow: the
        # costly step of a pass on a wide model); dropped on any edit, handed
        # by the pipeline to the next pass when a pass changed nothing.
        self._info = tensor_info

    def tensor_info(self):
        """A copy of the cached static shapes and dtypes, tensor -> (dims,
        dtype); a pass may add entries for the nodes it creates."""
        if self._info is None:
            self._info = shapes.tensor_info(self.graph_def)
        return dict(self._info)

    def cached_tensor_info(self):
        """The cached shapes if no edit has happened since, else None."""
        return self._info

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
        # Appended without deleting pending removals first (remove_nodes): a
        # removed node's name may be reused (a fused op takes over the name
        # of the output it replaces), and only nodes older than the removal go.
        nodes = self._graph_def.node
        nodes.append(node)
        node = nodes[-1]   # append copies: index and return the graph's own node
        # A new node changes no existing node, so a clean index is extended
        # rather than rebuilt: rebuilding it after each of a wide model's
        # thousand new nodes made fuse_dense quadratic (50 s on DeepCTR's
        # DeepFEFM, 8.5k nodes).
        if not self._dirty:
            self._nodes[node.name] = node
            self._link(node)
        self._edited()
        return node

    def add_const(self, name, value, dtype=None):
        value = np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
        proto = tensor_util.make_tensor_proto(value)
        return self.add_node("Const", name, attrs={"value": proto, "dtype": proto.dtype})

    def rewrite(self, node, op, inputs, attrs):
        """Turns `node` into `op` over `inputs` in place: its name, and so its
        consumers, stay; its control inputs are kept."""
        indexed = self._indexed(node)
        if indexed:
            self._unlink(node)
        controls = [i for i in node.input if i.startswith("^")]
        del node.input[:]
        node.op = op
        node.input.extend(list(inputs) + controls)
        node.attr.clear()
        for k, v in build_attrs(op, attrs).items():
            node.attr[k].CopyFrom(v)
        if indexed:
            self._link(node)
            self._edited()
        else:
            self.touch()

    def replace_uses(self, old, new):
        """Points every data use of tensor `old` at tensor `new`."""
        old_node, old_port = parse_input(old)
        if self._dirty:
            for n in self.graph_def.node:
                for i, inp in enumerate(n.input):
                    if not inp.startswith("^") and parse_input(inp) == (old_node, old_port):
                        n.input[i] = new
            self.touch()
            return
        new_node, new_port = parse_input(new)
        moved = [e for e in self._consumers.get(old_node, ()) if e[2] == old_port]
        self._consumers[old_node] = [e for e in self._consumers.get(old_node, ()) if e[2] != old_port]
        for n, i, _ in moved:
            n.input[i] = new
            self._consumers[new_node].append((n, i, new_port))
        self._edited()

    def remove_nodes(self, names):
        """Removes the named nodes: the index forgets them now, the GraphDef
        on its next read (view.graph_def), all pending removals in one scan.
        Deleting by position scans the whole graph, and passes that remove
        a few nodes at a time, thousands of times, were quadratic
        (FiBiNET's canonicalize and fuse_dense: 5 s of remove_nodes)."""
        names = set(names)
        if not self._dirty:
            for name in names:
                node = self._nodes.pop(name, None)
                if node is not None:
                    self._unlink(node)
        # name -> how many nodes the GraphDef held then: a node added later
        # under the same name is not the one removed.
        limit = len(self._graph_def.node)
        self._pending_removals.update(dict.fromkeys(names, limit))
        self._edited()

    @property
    def graph_def(self):
        """The GraphDef, with every removal so far deleted from it."""
        self._delete_removed()
        return self._graph_def

    def _delete_removed(self):
        if self._pending_removals:
            GraphView.deletion_scans += 1
            limits, self._pending_removals = self._pending_removals, {}
            nodes = self._graph_def.node
            # Deleted in place, by position: re-adding the kept nodes would
            # copy every one of them (and leave the index pointing at the old ones).
            for i in reversed([i for i, n in enumerate(nodes) if i < limits.get(n.name, 0)]):
                del nodes[i]
            _drop_colocation_with(nodes, set(limits))

    def removable(self, name, allowed_consumers=()):
        """True if `name` is not protected and only `allowed_consumers` use it."""
        if name in self.protected:
            return False
        if self.control_consumers(name):
            return False
        return all(c.name in allowed_consumers for c, _ in self.consumers(name))

    # ---- whole-graph checks (live_nodes, topological_order: NodeIndex) --
    def validate(self):
        """Raises GraphValidityError on dangling inputs, lost protected nodes,
        cycles, or a node its OpDef rejects (attr missing or under its
        minimum, input count off): TensorFlow would refuse the graph later,
        where the pass that broke it could no longer be dropped alone."""
        self._index()
        _check_graph(self, self._nodes)
        self.check_index()

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
