"""The ordered pass registry and the loop that runs passes in isolation."""
import copy
import time

from absl import logging

from grappler_passes import (canonicalize, cleanup, column_vectors, combine_parallel, fold_constants, fuse_afm, fuse_attention,
                             fuse_autoint, fuse_bilinear, fuse_cin, fuse_cross, fuse_dense, fuse_embedding, fuse_field_dots, fuse_fm,
                             fuse_gru, fuse_interaction, fuse_mha, fuse_pair_dot, fuse_topk)
from grappler_passes.graph_index import CHECK_INDEX
from grappler_passes.graph_view import GraphView
from grappler_passes.pass_base import PassContext, PassResult

_PASSES = {p.name: p for p in (
    cleanup.PruneIdentity, cleanup.PruneDeadNodes, fold_constants.FoldConstants, column_vectors.ColumnVectors,
    canonicalize.Canonicalize,
    fuse_embedding.FuseEmbedding, fuse_topk.FuseTopK, fuse_interaction.FuseInteraction, fuse_dense.FuseDense,
    fuse_fm.FuseFm, fuse_cross.FuseCross, fuse_cin.FuseCin, fuse_afm.FuseAfm, fuse_bilinear.FuseBilinear, fuse_autoint.FuseAutoInt,
    fuse_pair_dot.FusePairDot, fuse_field_dots.FuseFieldDots, fuse_attention.FuseAttention, fuse_gru.FuseGru,
    fuse_mha.FuseMultiHeadAttention,
    combine_parallel.CombineParallelDense)}

# Why this order: pruning Identity first makes producers adjacent so patterns
# see MatMul -> BiasAdd directly; folding weight-only subgraphs (transposes,
# casts of frozen variables, batch-norm arithmetic) turns weights into plain
# Consts; column_vectors turns weight-first Einsums on [B, d, 1] columns
# into MatMuls on rows (it needs the weights constant, and canonicalize's
# bias rule then sees the MatMul); canonicalize then rewrites the variants into BiasAdd/Relu form
# (which is all stock TF needs, for custom_ops=False). After every pass that
# rewrote something, run_pipeline prunes the nodes it left dead: a dead
# consumer still counts as a use and would block the next fusion (the
# gathers, Keras index-wrapping and hashing fuse_embedding replaced must not
# count as uses of anything fuse_dense wants). Fusion runs on the canonical graph. fuse_topk runs before fuse_dense,
# which would otherwise take a query-candidate product over a constant
# candidate matrix for a (million-output) dense layer. fuse_interaction runs after
# fuse_embedding, whose stacked output is the interaction's x. fuse_gru only
# reads loop bodies and rewires the loop's outer tensors, so its place is free;
# it runs before fuse_attention so DIEN's attention sees the op's sequence. fuse_mha runs before
# fuse_dense, which would turn its Q/K/V and output projections into FusedMLPs
# and hide their kernels. fuse_attention runs after
# fuse_dense: it takes the attention unit's MLP as the Recopt>FusedMLP that
# pass made, in whatever spelling the author wrote the layers; fuse_afm and
# fuse_bilinear likewise take AFM's attention MLP and FiBiNET's per-pair
# projections as FusedMLPs, and fuse_autoint AutoInt's Q/K/V projections.
# fuse_fm runs before fuse_pair_dot, whose form (a sum of products) its
# sum of squares also has. combine_parallel_dense is opt-in (passes=[...]): one
# wider layer + SplitV measured 1.11x at batch 1 but 0.79x at batch 512 for
# 8 experts of 256->64 (bench/dense_variants.py), so it is not a default.
DEFAULT_ORDER = ("prune_identity", "fold_constants", "column_vectors", "canonicalize", "fuse_embedding", "fuse_topk",
                 "fuse_interaction", "fuse_gru", "fuse_mha", "fuse_dense", "fuse_fm",
                 "fuse_cross", "fuse_cin", "fuse_afm", "fuse_bilinear", "fuse_autoint", "fuse_pair_dot", "fuse_field_dots", "fuse_attention")


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
    Variables the passes created are in the results' new_variables.

    Each pass runs on its own copy: if it raises or leaves an invalid graph
    (a dangling input, a cycle, a node its OpDef rejects), the copy is
    dropped, the error is recorded, and the next pass sees the graph as it
    was before. A pass that applied a rewrite is followed by dead-node
    pruning on the same copy.
    """
    current = copy.deepcopy(graph_def)
    results = []
    # What the passes so far have added joins what the next pass sees; a
    # dropped pass's variables are dropped with it.
    resources, variables = dict(resources or {}), dict(variables or {})
    info = None  # the current graph's shapes, while a pass has not changed it
    for cls in resolve_passes(passes, custom_ops, getattr(options, "device", "cpu")):
        trial = copy.deepcopy(current)
        view = GraphView(trial, protected, tensor_info=info)
        result = PassResult(name=cls.name, nodes_before=len(trial.node))
        start = time.perf_counter()
        try:
            ctx = PassContext(view=view, custom_ops=custom_ops, options=options, resources=dict(resources),
                              variables=dict(variables), derived=derived if derived is not None else {})
            size = len(trial.node)
            cls().run(ctx, result)
            if cls.prune_after and result.applied:
                result.pruned = cleanup.prune_dead(view)
            # A graph no edit touched is the one already validated: on a wide
            # model, validating after each of the ~20 passes that find
            # nothing cost ~1 s of optimize(). The test suite
            # (RECOPT_CHECK_INDEX=1) validates after every pass, which also
            # catches a pass that edits a node without telling the view.
            if view.edits or len(view.graph_def.node) != size or CHECK_INDEX:
                view.validate()
            current, info = trial, view.cached_tensor_info()
            present = {n.name for n in trial.node}
            result.new_variables = {k: v for k, v in ctx.new_variables.items() if k in present}
            variables.update(result.new_variables)
            resources.update({k: (tuple(v.shape.as_list()), v.dtype.name) for k, v in result.new_variables.items()})
        except Exception as exc:  # a failing pass must never sink the whole optimization
            result.error = f"{type(exc).__name__}: {exc}"
            logging.warning("pass %s failed and was skipped: %s", cls.name, result.error)
        result.seconds = time.perf_counter() - start
        result.nodes_after = len(current.node)
        logging.info("pass %-18s matched %d applied %d pruned %d nodes %d -> %d", cls.name, result.matched,
                     result.applied, result.pruned, result.nodes_before, result.nodes_after)
        results.append(result)
    return current, results
