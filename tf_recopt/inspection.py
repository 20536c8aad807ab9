"""tf_recopt.inspect() and tf_recopt.validate(): what optimize() would do to
a model, and whether an optimized model still answers like its original.
The CLI's `inspect` and `validate` commands are these functions printed."""
import dataclasses
import os
from typing import Dict, List

from grappler_passes import resolve_passes
from tf_recopt import api, saved_model_io, verify
from tf_recopt.options import OptimizeOptions
from tf_recopt.report import OptimizationReport


def inspect(saved_model_dir, *, custom_ops=True, passes=None, precision="fp32", device="cpu", signatures=None):
    """Runs optimize()'s passes on each signature and writes nothing.

    Returns a JSON-ready dict: path, tags, and per signature its inputs,
    outputs, op histogram and, per pass, matched / would_apply / pruned /
    skipped (node and reason) / error.
    """
    opts = OptimizeOptions(custom_ops=custom_ops, passes=passes, precision=precision, device=device,
                           signatures=signatures, validate=False)
    opts.validate_fields()
    resolve_passes(opts.passes, opts.custom_ops, opts.device)  # unknown names fail before any work
    path = os.path.abspath(saved_model_dir)
    saved_model_io.check_saved_model_dir(path)
    if custom_ops:
        from tf_recopt.ops import load_ops
        load_ops()
    model = saved_model_io.load(path, opts)
    report = OptimizationReport(input_dir=path, custom_ops=custom_ops, device=device)
    api.run_passes(model, opts, report)
    out = {"path": path, "tags": model.tags, "signatures": {}}
    for name, sig in model.signatures.items():
        sreport = report.signatures[name]
        out["signatures"][name] = {
            "inputs": {k: f"{s.dtype.name}{s.shape}" for k, s in sig.input_specs.items()},
            "outputs": list(sig.output_tensors),
            "ops": dict(sorted(sreport.ops_before.items(), key=lambda kv: -kv[1])),
            "nodes": {"before": sreport.nodes_before, "after": sreport.nodes_after},
            "passes": [{"pass": r.name, "matched": r.matched, "would_apply": r.applied, "pruned": r.pruned,
                        "skipped": [{"node": n, "reason": why} for n, why in r.skipped], "error": r.error}
                       for r in sreport.passes],
        }
    return out


@dataclasses.dataclass
class ValidationResult:
    ok: bool
    # signature -> one OutputParity per output (recall@k for fused top-k ids)
    signatures: Dict[str, List[verify.OutputParity]]
    missing: List[str]   # signatures of the original the optimized model lacks


def validate(original_dir, optimized_dir, *, batch_size=8, rtol=1e-4, atol=1e-5, recall_floor=0.99, seed=0):
    """Runs both models on the same generated inputs (ids inside their
    tables, valid ragged row_splits) and compares every output of every
    signature of the original; fused top-k ids are compared by recall@k."""
    import tensorflow as tf
    from tf_recopt.ops import load_ops
    from tf_recopt.ragged_feeds import ragged_parents
    load_ops()
    for path in (original_dir, optimized_dir):
        saved_model_io.check_saved_model_dir(path)
    original = saved_model_io.load(original_dir, OptimizeOptions(freeze_max_bytes=0))
    optimized = tf.saved_model.load(optimized_dir)
    # The optimized graphs tell which outputs are fused top-k ids.
    graphs = saved_model_io.load(optimized_dir, OptimizeOptions(freeze_max_bytes=0)).signatures
    result = ValidationResult(ok=True, signatures={}, missing=[])
    for name, sig in original.signatures.items():
        if name not in optimized.signatures or name not in graphs:
            result.missing.append(name)
            result.ok = False
            continue
        feeds = verify.generate_inputs(sig, original_dir, batch_size, seed=seed,
                                       ragged=ragged_parents(graphs[name].graph_def, sig))
        retrieval = verify.retrieval_outputs(graphs[name].graph_def, graphs[name].output_tensors)
        expected = verify.run_signature(sig.function, feeds)
        try:
            actual = verify.run_signature(optimized.signatures[name], feeds)
        except (TypeError, ValueError, tf.errors.OpError) as exc:  # another model's signature
            cause = " ".join(str(exc).split())[:300]
            parity = [verify.OutputParity(name, key, float("inf"), float("inf"), False,
                                          f"the optimized model fails on the original's inputs: {cause}")
                      for key in expected]
        else:
            parity = verify.compare(name, expected, actual, rtol, atol, retrieval, recall_floor)
        result.signatures[name] = parity
        result.ok &= all(p.ok for p in parity)
    return result
