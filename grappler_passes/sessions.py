"""The Session passes evaluate small subgraphs in (probes, constant folds).

Each evaluation builds a fresh graph and runs it once, so Grappler's own
optimization of that graph, and new thread pools, cost more than the run
itself (most of a probe's time; `python -m bench.optimize_time` shows the
effect on optimize() as a whole). Evaluating op by op is also the most
literal reading of the subgraph being replaced.
"""
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2


def evaluation_session(graph, threads=1):
    """A Session on `graph` without Grappler; `threads` 0 keeps TensorFlow's
    default pools (constant folds may multiply large weights)."""
    config = config_pb2.ConfigProto(inter_op_parallelism_threads=threads, intra_op_parallelism_threads=threads)
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = config_pb2.OptimizerOptions.L0
    return tf.compat.v1.Session(graph=graph, config=config)
