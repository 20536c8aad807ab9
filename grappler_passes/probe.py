"""Evaluates a small pure subgraph on chosen inputs, with TensorFlow itself.

Some index computations are spelled a dozen ways (a RaggedTensor's row ids
come out of tf.repeat, boolean_mask, Range and StridedSlice chains that
change between TensorFlow versions). Rather than match each spelling, a
pass asks what the subgraph computes: run it on a few probe inputs and
compare with the function it must be. Probing proves nothing for inputs it
did not try, so callers choose probes that separate the plausible
alternatives (empty rows, one row, uneven rows).
"""
from typing import List, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from grappler_passes.graph_view import parse_input, public_attrs
from grappler_passes.sessions import evaluation_session

# A probed subgraph is index arithmetic: a few dozen nodes in every form seen.
MAX_NODES = 200


# Index arithmetic: what row ids, lengths and counts are computed with.
# Any other op (a Placeholder, ParseExampleV2, a table lookup) is a leaf:
# a value the probed function takes as input.
INDEX_OPS = frozenset({
    "Identity", "Range", "StridedSlice", "Slice", "Sub", "Add", "AddV2", "Mul", "FloorDiv", "Cast",
    "Shape", "Size", "ExpandDims", "Squeeze", "Reshape", "BroadcastTo", "Tile", "Fill", "Pack", "ConcatV2",
    "Max", "Min", "Maximum", "Minimum", "Prod", "Sum", "Cumsum", "FloorMod", "Less", "LessEqual", "Greater",
    "GreaterEqual", "Equal", "NotEqual", "LogicalAnd", "Select", "SelectV2", "Where", "GatherV2",
    "OnesLike", "ZerosLike", "Bincount", "UpperBound", "LowerBound", "Neg", "Abs",
    "Relu",  # canonicalize spells max(x, 0) this way
})


def leaves(view, outputs, max_nodes=MAX_NODES, stop=()) -> Optional[List[str]]:
    """The tensors `outputs` are computed from through index arithmetic
    (data inputs only), or None if that subgraph is larger than
    `max_nodes`. Consts are not leaves; tensors in `stop` always are."""
    stop = {view.source(t) for t in stop}
    found, seen, stack = [], set(), [view.source(t) for t in outputs]
    while stack:
        tensor = stack.pop()
        node = view.node(parse_input(tensor)[0])
        if node is None or len(seen) > max_nodes:
            return None
        if node.op == "Const" or tensor in seen:
            continue
        seen.add(tensor)
        if tensor in stop or node.op not in INDEX_OPS or not node.input:
            found.append(tensor)
            continue
        stack.extend(view.source(i) for i in view.data_inputs(node))
    return sorted(found)


def _full(tensor):
    name, port = parse_input(tensor)
    return f"{name}:{port}"


def evaluate(view, outputs: List[str], inputs: List[str], probes: List[List[np.ndarray]]):
    """Values of `outputs` for each probe (one array per tensor of `inputs`,
    standing in for it), in one Session; a probe TensorFlow rejects gives
    None (an input outside the subgraph's domain proves nothing)."""
    fed = {view.source(t): f"recopt_probe_feed_{i}" for i, t in enumerate(inputs)}
    dtypes = [np.asarray(v).dtype for v in probes[0]]
    nodes = [_placeholder(name, dtype) for name, dtype in zip(fed.values(), dtypes)]
    done, stack = set(), [view.source(t) for t in outputs if view.source(t) not in fed]
    while stack:
        node = view.node(parse_input(stack.pop())[0])
        if node.name in done:
            continue
        done.add(node.name)
        copy = type(node)()
        copy.CopyFrom(node)
        del copy.input[:]
        if "_class" in copy.attr:  # colocation may name a node the copy leaves out
            del copy.attr["_class"]
        for tensor in view.data_inputs(node):  # asserts and other control deps stay out
            source = view.source(tensor)
            copy.input.append(fed.get(source, tensor))
            if source not in fed:
                stack.append(tensor)
        nodes.append(copy)
    fetches = [_full(fed.get(view.source(t), view.source(t))) for t in outputs]
    key = _structure_key(nodes, fetches, probes)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = _run(nodes, fed, fetches, probes)
    return [None if r is None else [np.copy(v) for v in r] for r in _CACHE[key]]


# A model's lookups repeat the same arithmetic under different node names:
# each distinct subgraph and probe set is run once per process.
_CACHE = {}
_CACHE_LIMIT = 4096


def _structure_key(nodes, fetches, probes):
    """The subgraph with its nodes renamed by position, its fetches, and the
    probe values: equal keys compute the same thing."""
    rename = {n.name: str(i) for i, n in enumerate(nodes)}

    def canonical(tensor):
        name, port = parse_input(tensor)
        return f"{rename.get(name, name)}:{port}"
    parts = []
    for node in nodes:
        attrs = sorted((k, v.SerializeToString(deterministic=True)) for k, v in public_attrs(node).items())
        parts.append((node.op, tuple(canonical(i) for i in node.input), tuple(attrs)))
    values = tuple((np.asarray(v).dtype.str, np.shape(v), np.asarray(v).tobytes()) for probe in probes
                   for v in probe)
    return tuple(parts), tuple(canonical(f) for f in fetches), len(probes), values


def _run(nodes, fed, fetches, probes):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_pb2.GraphDef(node=nodes), name="")
    results = []
    with evaluation_session(graph) as sess:
        for values in probes:
            try:
                results.append(sess.run(fetches, {f"{n}:0": v for n, v in zip(fed.values(), values)}))
            except (tf.errors.InvalidArgumentError, tf.errors.OutOfRangeError):
                results.append(None)
    return results


def _placeholder(name, dtype):
    node = node_def_pb2.NodeDef(name=name, op="Placeholder")
    node.attr["dtype"].type = tf.as_dtype(dtype).as_datatype_enum
    return node
