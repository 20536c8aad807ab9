"""The ordered pass registry and the loop that runs passes in isolation."""
import copy
import time

from absl import logging

from grappler_passes import (canonicalize, cleanup, combine_parallel, fold_constants, fuse_attention, fuse_dense,
                             fuse_embedding, fuse_gru, fuse_interaction, fuse_mha, fuse_topk)
from grappler_passes.graph_view import GraphView
from grappler_passes.pass_base import PassContext, PassResult

_PASSES = {p.name: p for p in (
    cleanup.PruneIdentity, cleanup.PruneDeadNodes, fold_constants.FoldConstants, canonicalize.Canonicalize,
    fuse_embedding.FuseEmbedding, fuse_topk.FuseTopK, fuse_interaction.FuseInteraction, fuse_dense.FuseDense,
    fuse_attention.FuseAttention, fuse_gru.FuseGru, fuse_mha.FuseMultiHeadAttention,
    combine_parallel.CombineParallelDense)}

# Why this order: pruning Identity first makes producers adjacent so patterns
# see MatMul -> BiasAdd directly; folding weight-only subgraphs (transposes,
# casts of frozen variables, batch-norm arithmetic) turns weights into plain
# Consts; canonicalize then rewrites the variants into BiasAdd/Relu form
# (which is all stock TF needs, for custom_ops=False); pruning what that
# orphaned matters because a dead consumer still counts as a use and would
# block fusion; embedding fusion runs first and is pruned after, so the
# gathers, Keras index-wrapping and hashing it replaced no longer count as
# uses of anything fuse_dense wants; fusion runs on the canonical graph; a
# final prune drops what the fusers orphaned. fuse_topk runs before fuse_dense,
# which would otherwise take a query-candidate product over a constant
# candidate matrix for a (million-output) dense layer. fuse_interaction runs after
# fuse_embedding, whose stacked output is the interaction's x. fuse_gru only
# reads loop bodies and rewires the loop's outer tensors, so its place is free;
# it runs before fuse_attention so DIEN's attention sees the op's sequence. fuse_mha runs before
# fuse_dense, which would turn its Q/K/V and output projections into FusedMLPs
# and hide their kernels. fuse_attention runs after
# fuse_dense: it takes the attention unit's MLP as the Recopt>FusedMLP that
# pass made, in whatever spelling the author wrote the layers. combine_parallel_dense is opt-in (passes=[...]): one
# wider layer + SplitV measured 1.11x at batch 1 but 0.79x at batch 512 for
# 8 experts of 256->64 (bench/dense_variants.py), so it is not a default.
DEFAULT_ORDER = ("prune_identity", "fold_constants", "canonicalize", "prune_dead_nodes", "fuse_embedding",
                 "prune_dead_nodes", "fuse_topk", "prune_dead_nodes", "fuse_interaction", "prune_dead_nodes",
                 "fuse_gru", "prune_dead_nodes", "fuse_mha", "prune_dead_nodes", "fuse_dense", "prune_dead_nodes",
                 "fuse_attention", "prune_dead_nodes")


class UnknownPassError(ValueError):
    pass


def available_passes():
    return {name: p.description for name, p in _PASSES.items()}


def resolve_passes(passes=None, custom_ops=True, device="cpu"):
    """Names -> pass classes, in DEFAULT_ORDER unless `passes` gives an order.

    For device="gpu" the default order drops the passes whose ops have no GPU
    kernel; asking for one of them by name is an error.
    """
    names = list(DEFAULT_ORDER if passes is None else passes)
    unknown = [n for n in names if n not in _PASSES]
    if unknown:
        raise UnknownPassError(f"unknown pass name(s) {unknown}; known: {sorted(_PASSES)}")
    chosen = [_PASSES[n] for n in names if custom_ops or not _PASSES[n].requires_custom_ops]
    if device == "gpu" and custom_ops:
        cpu_only = sorted({p.name for p in chosen if not p.gpu_kernels})
        if cpu_only and passes is not None:
            raise UnknownPassError(f"pass(es) {cpu_only} emit ops with no GPU kernel; not available for device='gpu'")
        chosen = [p for p in chosen if p.gpu_kernels]
    return chosen


def run_pipeline(graph_def, protected, passes=None, custom_ops=True, options=None, resources=None,
                 variables=None, derived=None):
    """Runs the passes over a copy of graph_def; returns (graph_def, [PassResult]).

    Each pass runs on its own copy: if it raises or leaves an invalid graph,
    the copy is dropped, the error is recorded, and the next pass sees the
    graph as it was before.
    """
    current = copy.deepcopy(graph_def)
    results = []
    for cls in resolve_passes(passes, custom_ops, getattr(options, "device", "cpu")):
        trial = copy.deepcopy(current)
        view = GraphView(trial, protected)
        result = PassResult(name=cls.name, nodes_before=len(trial.node))
        start = time.perf_counter()
        try:
            cls().run(PassContext(view=view, custom_ops=custom_ops, options=options,
                                  resources=resources if resources is not None else {},
                                  variables=variables if variables is not None else {},
                                  derived=derived if derived is not None else {}), result)
            view.validate()
            current = trial
        except Exception as exc:  # a failing pass must never sink the whole optimization
            result.error = f"{type(exc).__name__}: {exc}"
            logging.warning("pass %s failed and was skipped: %s", cls.name, result.error)
        result.seconds = time.perf_counter() - start
        result.nodes_after = len(current.node)
        logging.info("pass %-18s matched %d applied %d nodes %d -> %d", cls.name, result.matched,
                     result.applied, result.nodes_before, result.nodes_after)
        results.append(result)
    return current, results
