"""Recognises an activation by what it computes, not by how it is written.

Authors and frameworks write GELU as erf or erfc, with Pow or x*x*x, swish
as x*sigmoid(x) behind an IdentityN, relu as Maximum(x, 0)... Rather than a
pattern per spelling, this module takes the elementwise region hanging off a
tensor (ops whose only non-constant input is that tensor or the region
itself, constants all scalars), evaluates it once with TensorFlow on probe
values, and compares the result with each activation the fused kernels
implement. A region that computes anything else is left alone.
"""
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import graph_pb2, node_def_pb2

from custom_ops.spec import activations
from grappler_passes.graph_view import parse_input, scalar_of
from grappler_passes.sessions import evaluation_session

# One-op activations need no probing.
SINGLE_OP = {
    "Relu": "relu", "Relu6": "relu6", "Elu": "elu", "Selu": "selu", "Sigmoid": "sigmoid",
    "Tanh": "tanh", "Softplus": "softplus", "LeakyRelu": "leaky_relu",
}
ELEMENTWISE = frozenset({
    "Mul", "Add", "AddV2", "Sub", "RealDiv", "Neg", "Maximum", "Minimum", "Pow", "Square", "Erf", "Erfc",
    "Tanh", "Sigmoid", "Exp", "Relu", "Relu6", "Elu", "Selu", "Softplus", "LeakyRelu", "IdentityN",
    "Identity", "Reciprocal", "Sqrt", "Rsqrt", "Abs", "SelectV2", "Greater", "Less", "GreaterEqual",
})
MAX_REGION = 24
PROBE = np.concatenate([np.linspace(-8.0, 8.0, 161), [-30.0, -0.013, 0.017, 30.0]]).astype(np.float32)


def _references():
    x = tf.constant(PROBE)
    return {name: activations.apply(name, x).numpy() for name in activations.ACTIVATION_NAMES
            if name != "leaky_relu"}


_REFS = None


def classify(values):
    """(activation, alpha) whose values on PROBE match, or None."""
    global _REFS
    if _REFS is None:
        _REFS = _references()
    if values.shape != PROBE.shape or not np.all(np.isfinite(values)):
        return None
    for name, ref in _REFS.items():
        if np.allclose(values, ref, rtol=1e-4, atol=1e-5):
            return name, 0.0
    alpha = -float(values[PROBE == -1.0][0])
    if 0.0 < alpha < 1.0 and np.allclose(values, np.where(PROBE > 0, PROBE, alpha * PROBE), rtol=1e-5, atol=1e-6):
        return "leaky_relu", alpha
    return None


def _grow(view, pre):
    """Elementwise nodes computable from `pre` and scalar constants, in topological order."""
    region, order = set(), []
    frontier = [c for c, _ in view.consumers(*parse_input(pre))]
    while frontier and len(order) < MAX_REGION:
        node = frontier.pop(0)
        if node.name in region or node.op not in ELEMENTWISE or view.has_control_inputs(node):
            continue
        feeds = view.data_inputs(node)
        inside = [parse_input(i) == parse_input(pre) or parse_input(i)[0] in region for i in feeds]
        if not any(inside) or not all(ok or scalar_of(view.node(i)) is not None for ok, i in zip(inside, feeds)):
            continue
        region.add(node.name)
        order.append(node)
        frontier.extend(c for c, _ in view.consumers(node.name))
    return order


def _only_output(view, region, out):
    """True if `out` is the only tensor of the region used outside it."""
    names = {n.name for n in region}
    for n in region:
        if n.name in view.protected or view.control_consumers(n.name):
            return False
        for consumer, index in view.consumers(n.name):
            if consumer.name not in names and parse_input(consumer.input[index]) != parse_input(out):
                return False
    return True


def _ancestors(view, tensor, pool):
    by_name = {n.name: n for n in pool}
    keep, stack = set(), [parse_input(tensor)[0]]
    while stack:
        name = stack.pop()
        if name in keep or name not in by_name:
            continue
        keep.add(name)
        stack.extend(parse_input(i)[0] for i in view.data_inputs(by_name[name]))
    return [n for n in pool if n.name in keep]


def _evaluate(view, nodes, pre, out):
    sub = graph_pb2.GraphDef()
    placeholder = sub.node.add(op="Placeholder", name="recopt_probe_input")
    placeholder.attr["dtype"].type = tf.float32.as_datatype_enum
    names = {n.name for n in nodes}
    copied = set()
    for n in nodes:
        copy = node_def_pb2.NodeDef()
        copy.CopyFrom(n)
        copy.device = ""
        for i, inp in enumerate(copy.input):
            src = parse_input(inp)[0]
            if inp == pre or (src == parse_input(pre)[0] and parse_input(inp)[1] == parse_input(pre)[1]):
                copy.input[i] = "recopt_probe_input"
            elif src not in names and src not in copied:
                copied.add(src)
                sub.node.add().CopyFrom(view.node(src))
        sub.node.append(copy)
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(sub, name="")
    with evaluation_session(graph) as sess:
        name, port = parse_input(out)
        return np.asarray(sess.run(f"{name}:{port}", {"recopt_probe_input:0": PROBE}))


def find_activation(view, pre):
    """Largest elementwise region after tensor `pre` computing a known
    activation: (name, alpha, output tensor, region NodeDefs), or None."""
    consumers = view.consumers(*parse_input(pre))
    if len(consumers) == 1 and consumers[0][0].op in SINGLE_OP and not view.has_control_inputs(consumers[0][0]):
        node = consumers[0][0]
        alpha = node.attr["alpha"].f if node.op == "LeakyRelu" else 0.0
        return SINGLE_OP[node.op], alpha, node.name, [node]
    pool = _grow(view, pre)
    for node in reversed(pool):
        for port in range(1 if node.op != "IdentityN" else len(node.attr["T"].list.type)):
            out = node.name if port == 0 else f"{node.name}:{port}"
            region = _ancestors(view, out, pool)
            if not _covers_pre(view, pre, region) or not _only_output(view, region, out):
                continue
            try:
                found = classify(_evaluate(view, region, pre, out))
            except Exception:  # a region TF cannot evaluate alone is simply not an activation
                found = None
            if found:
                return found[0], found[1], out, region
    return None


def _covers_pre(view, pre, region):
    """Every use of `pre` must be inside the region, or pre cannot be fused away."""
    names = {n.name for n in region}
    return all(c.name in names for c, _ in view.consumers(parse_input(pre)[0])) and \
        not view.control_consumers(parse_input(pre)[0])
