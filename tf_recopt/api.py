"""optimize(): load -> passes -> write to a temp dir -> verify -> rename."""
import contextlib
import dataclasses
import functools
import gc
import os
import shutil
import tempfile
import time

import tensorflow as tf
from absl import logging
from tensorflow.core.framework import types_pb2

from grappler_passes import resolve_passes, run_pipeline
from grappler_passes.graph_view import GraphView
from grappler_passes.pass_base import COMPONENT_PRECISIONS
from tf_recopt import accuracy, example_feeds, saved_model_io, verify
from tf_recopt.errors import ParityError
from tf_recopt.options import OptimizeOptions
from tf_recopt.report import OptimizationReport, SignatureReport

REPORT_PATH = os.path.join("assets.extra", "recopt_report.json")


def _long_lived_objects_frozen(fn):
    """Runs fn with the objects alive at its start, and those frozen later
    (the loaded model), outside the cyclic collector's reach. Python's full
    collections walk every tracked object, and a loaded wide model is
    millions of them (FuncGraph ops, tensors): on DeepCTR's FiBiNET one
    rebuild of a pass's node index took 0.4-0.6 s instead of 40-60 ms, the
    collector's walks triggered by its allocations. Garbage made during the
    call is still collected; everything is unfrozen at the end."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        gc.freeze()
        try:
            return fn(*args, **kwargs)
        finally:
            gc.unfreeze()
    return wrapper


@contextlib.contextmanager
def _collector_paused():
    """Loading builds the model's functions as millions of long-lived
    objects, which the collector would walk again and again while they are
    being made, and the passes allocate by the million (node index tuples,
    protobuf wrappers), each threshold crossing a walk. What either leaves
    as cyclic garbage (the passes' shape-inference graphs) is collected once
    after: on FiBiNET that held peak RSS ~130 MB higher (1.37 vs 1.24 GB)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@_long_lived_objects_frozen
def optimize(saved_model_dir, output_dir=None, *, signatures=None, custom_ops=True, passes=None,
             validate=True, sample_inputs=None, rtol=None, atol=None, overwrite=False, precision="fp32",
             **options):
    """Optimizes a SavedModel and writes the result to `output_dir`.

    Args:
      saved_model_dir: the SavedModel to optimize; never modified.
      output_dir: where to write; default `<saved_model_dir>_recopt`. Written
        atomically (a temp dir renamed into place); nothing is left on failure.
      signatures: names of the signatures to rewrite (default all); every
        signature is kept in the output either way.
      custom_ops: False keeps to stock TensorFlow ops (loads in unmodified TF Serving).
      passes: pass names in run order (default grappler_passes.DEFAULT_ORDER).
      validate: compare original and optimized outputs; raise ParityError and
        write nothing when any differs beyond rtol/atol.
      sample_inputs: parity inputs: {key: array}, {signature: {key: array}},
        or tf.Example TFRecords (a file, directory, glob or list of them;
        *.gz read as GZIP): a parsing signature gets the serialized
        records, any other signature the feature named like each input.
      rtol, atol: parity tolerances; default 1e-4/1e-5 (fp32), 2e-2/5e-3 (bf16),
        5e-2/5e-2 (int8): the loosest component's.
      overwrite: replace an existing output_dir.
      precision: one for every component, or per component as a mapping
        ({"dense": "int8", "retrieval": "fp32", "embedding": "bf16"}; absent
        components stay fp32) or the string "dense=int8,retrieval=fp32".
        "fp32"; "bf16" stores fused dense weights, retrieval
        candidates and fused embedding tables as bfloat16 (fp32 inputs and
        accumulation); "int8" stores retrieval candidates as int8 with
        per-row scales, and fused dense layers at least 16 wide both ways
        multiply in int8 (weights per output column, each input row with
        its own scale, int32 sums) where oneDNN has VNNI/AMX int8 kernels;
        when those layers alone break parity under the plain "int8",
        optimize() reruns them in fp32 and report.precision_fallbacks says
        why (a mapping naming dense=int8 fails instead). Retrieval at
        "int8" or "bf16" is exact on the CPU: the quantized scan keeps every
        candidate its rounding bound cannot rule out and rescores those from
        the fp32 rows (Recopt>ExactScoreTopK), so ids and scores are the
        fp32 scan's and retrieval is held to fp32's tolerance;
        "int8_approx"/"bf16_approx" keep the scan's own top k (recall_floor
        gates it), as does device="gpu". "auto": fp32, bf16 and int8 each
        optimized and gated as above, those that pass timed on this machine
        (eager calls at batch 1 and 64, interleaved), and the fastest
        written, a lower precision only when at least 3% faster than the
        higher one it replaces; report.auto lists each candidate. It takes
        about three optimize() calls.
      device (option): "cpu" (default) or "gpu": for GPU serving, only rewrites
        whose ops have GPU kernels (fused embedding and interaction are left
        out) and within those kernels' limits (k <= 4096, d <= 1536).
      recall_floor (option): retrieval ids (fused score+top-k) are compared as
        sets; nothing is written when mean recall@k is below it (default 0.99).
      **options: further OptimizeOptions fields (freeze_max_bytes, ...).

    Returns:
      OptimizationReport (also written to assets.extra/recopt_report.json).
    """
    src = os.path.abspath(saved_model_dir)
    out = os.path.abspath(output_dir) if output_dir else src.rstrip(os.sep) + "_recopt"
    if isinstance(precision, str) and precision == "auto":
        _check_paths(src, out, overwrite)
        from tf_recopt.auto_precision import optimize_auto
        return optimize_auto(optimize, src, out, dict(
            signatures=signatures, custom_ops=custom_ops, passes=passes, validate=validate,
            sample_inputs=sample_inputs, rtol=rtol, atol=atol, **options), REPORT_PATH)
    opts = OptimizeOptions(signatures=signatures, custom_ops=custom_ops, passes=passes, validate=validate,
                           sample_inputs=sample_inputs, rtol=rtol, atol=atol, precision=precision, **options)
    opts.validate_fields()
    _check_paths(src, out, overwrite)
    resolve_passes(opts.passes, opts.custom_ops, opts.device)  # unknown names fail before any work
    if opts.custom_ops:
        from tf_recopt.ops import load_ops
        load_ops()

    report = OptimizationReport(input_dir=src, custom_ops=opts.custom_ops, device=opts.device,
                                precision={c: opts.precision_for(c) for c in COMPONENT_PRECISIONS})
    with _stage(report, "load"), _collector_paused():
        model = saved_model_io.load(src, opts)
    gc.freeze()  # the loaded functions live until optimize() returns (_long_lived_objects_frozen)
    warming = [verify.warm_up(sig, model.path) for sig in model.signatures.values()] if opts.validate else []
    warming = [t for t in warming if t is not None]
    report.frozen_variables, report.frozen_bytes = model.frozen_variables, model.frozen_bytes
    report.kept_variables = model.kept_variables
    # The passes re-point captures (sync_captures); a retry starts from these.
    captures = {name: list(sig.captures) for name, sig in model.signatures.items()}
    with _stage(report, "passes"):
        graphs = run_passes(model, opts, report)
    # TF Serving layouts write straight into base/<version>; base may be new.
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".recopt_tmp_", dir=os.path.dirname(out))
    try:
        # Under the plain "int8", each component whose int8 form may be what
        # broke parity goes back to fp32 in turn (dense first: per-row
        # activation rounding moves outputs most; a query tower feeding
        # int8 retrieval costs recall@k), and int8 elsewhere is gated again.
        # A mapping that names int8 is what the user wants or nothing.
        relaxable = [c for c in _INT8_FALLBACK_ORDER if opts.precision in ("int8", "int8_approx") and opts.validate]
        while True:
            try:
                _write_and_verify(model, graphs, tmp, opts, report, warming)
                break
            except ParityError as exc:
                component = next((c for c in relaxable if _INT8_IN_GRAPH[c](graphs)), None)
                if component is None:
                    raise
                relaxable.remove(component)
                report.precision_fallbacks.append(f"int8 {_INT8_WHAT[component]} run in fp32: with them, "
                                                  + exc.args[0].removesuffix("; nothing was written"))
                opts = dataclasses.replace(opts, fp32_components=tuple(opts.fp32_components) + (component,))
                report.precision[component] = "fp32"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp = tempfile.mkdtemp(prefix=".recopt_tmp_", dir=os.path.dirname(out))
                for name, sig in model.signatures.items():
                    sig.captures = list(captures[name])
                with _stage(report, "passes"):
                    graphs = run_passes(model, opts, report)
        _finish(report, tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("%s", report)
    return report


def _write_and_verify(model, graphs, tmp, opts, report, warming=()):
    with _stage(report, "write"):
        saved_model_io.save(model, graphs, tmp)
    if opts.validate:
        with _stage(report, "verify"):
            for thread in warming:
                thread.join()
            _verify(model, tmp, opts, report, graphs)


def _nodes(graphs):
    return (n for g in graphs.values() for n in list(g.node) + [n for f in g.library.function for n in f.node_def])


_INT8_FALLBACK_ORDER = ("dense", "embedding")
_INT8_WHAT = {"dense": "dense layers", "embedding": "embedding tables"}
_INT8_IN_GRAPH = {
    "dense": lambda graphs: any(n.op == "Recopt>FusedMLP" and n.attr["int8_layers"].list.i for n in _nodes(graphs)),
    "embedding": lambda graphs: any(n.op == "Recopt>FusedEmbeddingLookup" and
                                    types_pb2.DT_UINT8 in n.attr["Ttables"].list.type for n in _nodes(graphs)),
}


def _check_paths(src, out, overwrite):
    saved_model_io.check_saved_model_dir(src)
    if out == src or out.startswith(src + os.sep) or src.startswith(out + os.sep):
        raise ValueError(f"output_dir {out} must not be the input or inside it (the input is never modified)")
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")


@contextlib.contextmanager
def _stage(report, name):
    start = time.perf_counter()
    yield
    report.stage_seconds[name] = round(time.perf_counter() - start, 4)


def run_passes(model, opts, report):
    """The pipeline over each signature of a loaded model (optimize() and
    inspect() alike): {signature: GraphDef}, with the report's per-signature
    pass results and op counts filled in."""
    with _collector_paused():
        graphs = _run_passes(model, opts, report)
    gc.collect()  # the passes' graph imports (shape inference) left cycles behind
    return graphs


def _run_passes(model, opts, report):
    graphs, derived = {}, {}
    for name, sig in model.signatures.items():
        sreport = SignatureReport(name)
        before = GraphView(sig.graph_def)
        sreport.nodes_before, sreport.ops_before = len(sig.graph_def.node), before.op_histogram()
        if opts.signatures and name not in opts.signatures:
            graphs[name] = sig.graph_def
        else:
            graphs[name], sreport.passes = run_pipeline(sig.graph_def, sig.protected_nodes(), opts.passes,
                                                        opts.custom_ops, opts, sig.resource_specs(),
                                                        sig.variables(), derived)
            sig.sync_captures(graphs[name], {k: v for r in sreport.passes for k, v in r.new_variables.items()})
        sreport.nodes_after = len(graphs[name].node)
        sreport.ops_after = GraphView(graphs[name]).op_histogram()
        report.signatures[name] = sreport
    return graphs


def _verify(model, tmp, opts, report, graphs):
    optimized = tf.saved_model.load(tmp)
    failures = []
    labelled = accuracy.labelled_examples(opts) if opts.label_key is not None else None
    for name, sig in model.signatures.items():
        feeds = verify.inputs_for(sig, model.path, opts, graphs[name])
        expected = _run_for_parity(sig.function, feeds, f"signature '{name}': the original model", report,
                                   "the generated inputs may lack structure the model needs (SparseTensor "
                                   "components, row_splits): pass sample_inputs= (--sample-examples) or "
                                   "validate=False (--no-validate)")
        actual = _run_for_parity(optimized.signatures[name], feeds, f"signature '{name}': the optimized model",
                                 report, "the rewrite is wrong for these inputs")
        retrieval = verify.retrieval_outputs(graphs[name], sig.output_tensors)
        parity = verify.compare(name, expected, actual, opts.rtol, opts.atol, retrieval, opts.recall_floor)
        report.signatures[name].parity = parity
        _count_survivors(name, sig, graphs[name], feeds, report)
        if labelled is not None:
            _judge_by_metrics(name, sig, optimized.signatures[name], labelled, opts, report)
        failures += [p for p in parity if not p.ok]
    if labelled is not None and not any(s.metrics for s in report.signatures.values()):
        raise ValueError(f"label_key={opts.label_key!r}: no signature has a per-example probability output "
                         f"(float [batch] or [batch, 1] in [0, 1]) to judge by AUC and logloss")
    if failures:
        detail = "; ".join(f"{p.signature}/{p.output}: " + (p.detail if p.recall is not None else
                                                               f"max_abs={p.max_abs:.3g} max_rel={p.max_rel:.3g} {p.detail}")
                           for p in failures)
        raise ParityError(f"optimized model differs from {model.path} beyond rtol={opts.rtol} "
                          f"atol={opts.atol}: {detail}; nothing was written", report)


def _count_survivors(name, sig, graph_def, feeds, report):
    """The exact retrieval ops' survivor counts on the parity inputs, read
    from inside the optimized graph. Only a report line: a failure to read
    them is logged, never a failed optimize()."""
    try:
        report.signatures[name].survivors = verify.exact_retrieval_survivors(
            name, graph_def, lambda tensors: saved_model_io.probe(sig, graph_def, tensors, feeds))
    except (tf.errors.OpError, ValueError, TypeError) as exc:
        logging.warning("signature '%s': exact retrieval survivor counts unavailable: %s", name, exc)


def _judge_by_metrics(name, sig, optimized_fn, labelled, opts, report):
    """AUC/logloss over the labelled examples; for the outputs they judge,
    the metric gate replaces the element-wise one (parity stays reported)."""
    records, labels = labelled

    def feeds_for(start, end):
        return example_feeds.feeds_from_examples(sig, records[start:end])
    expected = _guarded(lambda: accuracy.run_chunked(sig.function, feeds_for, len(records)),
                        f"signature '{name}': the original model", report, "on the labelled examples")
    scored = accuracy.scored_outputs(name, expected, opts.label_key)
    if not scored:
        return
    actual = _guarded(lambda: accuracy.run_chunked(optimized_fn, feeds_for, len(records)),
                      f"signature '{name}': the optimized model", report, "the rewrite is wrong for these inputs")
    metrics = accuracy.compare(name, scored, labels, expected, actual, opts.max_auc_drop, opts.max_logloss_increase)
    report.signatures[name].metrics = metrics
    by_output = {m.output: m for m in metrics}
    for p in report.signatures[name].parity:
        if p.output in by_output:
            p.ok, p.detail = by_output[p.output].ok, by_output[p.output].detail


def _run_for_parity(fn, feeds, who, report, hint):
    return _guarded(lambda: verify.run_signature(fn, feeds), who, report, hint)


def _guarded(run, who, report, hint):
    """run()'s outputs; a TensorFlow error becomes a ParityError with TF's
    message (it names the node at fault), since nothing can be compared."""
    try:
        return run()
    except tf.errors.OpError as exc:
        cause = " ".join(line.strip() for line in str(exc.message).splitlines() if line.strip())
        raise ParityError(f"{who} failed on the parity inputs: {cause[-600:]}; {hint}; nothing was written",
                          report) from exc


def _finish(report, tmp, out, overwrite):
    report.output_dir = out
    report.written = True
    os.makedirs(os.path.join(tmp, "assets.extra"), exist_ok=True)
    with open(os.path.join(tmp, REPORT_PATH), "w") as f:
        f.write(report.to_json())
    if overwrite and os.path.exists(out):
        shutil.rmtree(out)
    os.rename(tmp, out)
