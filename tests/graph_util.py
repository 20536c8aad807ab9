"""Helpers for pass tests: trace a function to a GraphDef, run a GraphDef."""
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from grappler_passes import run_pipeline


def frozen_graph(fn, *specs, functional_loops=False):
    """(GraphDef, input names, output names) of fn traced on specs, variables
    frozen. functional_loops keeps While as one node over library functions,
    as tf_recopt's loader does, instead of lowering it to Enter/Exit frames."""
    concrete = tf.function(fn).get_concrete_function(*specs)
    frozen = convert_to_constants.convert_variables_to_constants_v2(
        concrete, lower_control_flow=not functional_loops, aggressive_inlining=functional_loops)
    graph_def = frozen.graph.as_graph_def()
    inputs = [t.name for t in frozen.inputs]
    outputs = [t.name for t in frozen.outputs]
    return graph_def, inputs, outputs


def run_graph(graph_def, inputs, outputs, feeds):
    graph = tf.Graph()
    with graph.as_default():
        tf.graph_util.import_graph_def(graph_def, name="")
    with tf.compat.v1.Session(graph=graph) as sess:
        return sess.run(outputs, dict(zip(inputs, feeds)))


def optimize_graph(graph_def, inputs, outputs, passes=None, custom_ops=True):
    if custom_ops:  # as optimize() does: shape inference over emitted Recopt ops needs them registered
        import tf_recopt
        tf_recopt.load_ops()
    protected = {n.split(":")[0] for n in inputs + outputs}
    return run_pipeline(graph_def, protected, passes=passes, custom_ops=custom_ops)


def ops_of(graph_def):
    return [n.op for n in graph_def.node]


def check_rewrite(fn, specs, feeds, op, count=1, gone=(), rtol=1e-6):
    """Traces fn, optimizes it, and asserts `count` `op` nodes, none of
    `gone`, and the original's answers on feeds. Returns the new GraphDef."""
    import numpy as np
    graph_def, inputs, outputs = frozen_graph(fn, *specs)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    ops = ops_of(new)
    assert ops.count(op) == count, ops
    for name in gone:
        assert name not in ops, ops
    for g, w in zip(run_graph(new, inputs, outputs, feeds), run_graph(graph_def, inputs, outputs, feeds)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-6)
    return new


def optimize_with_parity(fn, specs, feeds, pass_name, rtol=1e-5, atol=1e-5):
    """Traces fn on specs, runs the default passes, asserts the optimized
    graph's outputs match the original's on feeds; returns (the optimized
    graph's ops, the skip reasons pass_name reported)."""
    import numpy as np
    graph_def, inputs, outputs = frozen_graph(fn, *specs)
    new, results = optimize_graph(graph_def, inputs, outputs)
    for g, w in zip(run_graph(new, inputs, outputs, feeds), run_graph(graph_def, inputs, outputs, feeds)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return ops_of(new), [why for r in results if r.name == pass_name for _, why in r.skipped]
