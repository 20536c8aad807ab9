"""OptimizationReport: what each pass did, node counts, parity, stage times."""
import dataclasses
import json
from typing import Dict, List

from grappler_passes.pass_base import EXACT_RETRIEVAL, PassResult
from tf_recopt.accuracy import MetricParity, describe
from tf_recopt.verify import OutputParity, Survivors


@dataclasses.dataclass
class SignatureReport:
    name: str
    nodes_before: int = 0
    nodes_after: int = 0
    ops_before: Dict[str, int] = dataclasses.field(default_factory=dict)
    ops_after: Dict[str, int] = dataclasses.field(default_factory=dict)
    passes: List[PassResult] = dataclasses.field(default_factory=list)
    parity: List[OutputParity] = dataclasses.field(default_factory=list)
    # With label_key: AUC/logloss of the probability outputs, which gate
    # those outputs instead of element-wise tolerance.
    metrics: List[MetricParity] = dataclasses.field(default_factory=list)
    # Exact retrieval ops: fp32 rescoring per parity query.
    survivors: List[Survivors] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class OptimizationReport:
    input_dir: str
    output_dir: str = ""
    custom_ops: bool = True
    device: str = "cpu"
    written: bool = False
    frozen_variables: int = 0
    frozen_bytes: int = 0
    kept_variables: List[str] = dataclasses.field(default_factory=list)
    signatures: Dict[str, SignatureReport] = dataclasses.field(default_factory=dict)
    stage_seconds: Dict[str, float] = dataclasses.field(default_factory=dict)
    # What each component was written in ({"dense": "int8", ...}).
    precision: Dict[str, str] = dataclasses.field(default_factory=dict)
    # Precision given up to keep parity, and why (precision="int8" whose
    # int8 dense layers failed the tolerance: they were rerun in fp32).
    precision_fallbacks: List[str] = dataclasses.field(default_factory=list)
    # precision="auto": each candidate precision, whether it passed its
    # gate, its median ms per batch and speed against fp32, and the choice.
    auto: List[Dict] = dataclasses.field(default_factory=list)

    @property
    def parity_ok(self):
        return all(p.ok for s in self.signatures.values() for p in s.parity)

    def rewrites(self):
        """pass name -> rewrites applied, over all signatures."""
        totals = {}
        for sig in self.signatures.values():
            for p in sig.passes:
                totals[p.name] = totals.get(p.name, 0) + p.applied
        return totals

    def to_dict(self):
        d = dataclasses.asdict(self)
        for name, sig in self.signatures.items():
            d["signatures"][name]["passes"] = [p.to_dict() for p in sig.passes]
        d["parity_ok"] = self.parity_ok
        return d

    def to_json(self, indent=1):
        return json.dumps(self.to_dict(), indent=indent, default=float)

    def __str__(self):
        lines = [f"tf-recopt: {self.input_dir} -> {self.output_dir or '(not written)'}"
                 f"  custom_ops={self.custom_ops}  frozen vars={self.frozen_variables}"
                 f" ({self.frozen_bytes / 2**20:.1f} MiB)  kept vars={len(self.kept_variables)}"]
        for sig in self.signatures.values():
            lines.append(f"signature '{sig.name}': nodes {sig.nodes_before} -> {sig.nodes_after}")
            lines.append(f"  {'pass':<18} {'matched':>7} {'applied':>7} {'skipped':>7} {'nodes':>13} {'ms':>8}")
            for p in sig.passes:
                nodes = f"{p.nodes_before}->{p.nodes_after}"
                lines.append(f"  {p.name:<18} {p.matched:>7} {p.applied:>7} {len(p.skipped):>7} {nodes:>13} "
                             f"{p.seconds * 1e3:>8.1f}" + (f"  FAILED: {p.error}" if p.error else ""))
                for node, reason in p.skipped[:5]:
                    lines.append(f"    skipped {node}: {reason}")
            for q in sig.parity:
                measure = (f"recall@k={q.recall:.4f}" if q.recall is not None else
                           f"max_abs={q.max_abs:.3g} max_rel={q.max_rel:.3g}")
                lines.append(f"  parity {q.output:<20} {measure} {'ok' if q.ok else 'FAIL ' + q.detail}")
            lines += [f"  accuracy {line}" for line in describe(sig.metrics)]
            for v in sig.survivors:
                lines.append(f"  retrieval {v.node}: fp32 rescoring of median {v.median:g}, max {v.max} of "
                             f"{v.candidates} candidates per query; {v.fallbacks} of {v.queries} parity queries "
                             "took the fp32 scan")
        if any(p != "fp32" for p in self.precision.values()):
            lines.append("precision: " + ", ".join(f"{c}={p}" for c, p in self.precision.items()))
        if self.precision.get("retrieval") in EXACT_RETRIEVAL and self.device == "cpu":
            lines.append(f"retrieval: exact ({self.precision['retrieval']} scan, fp32 rescoring of every candidate "
                         "its rounding bound cannot rule out: the fp32 ids and scores)")
        lines += [f"precision fallback: {f}" for f in self.precision_fallbacks]
        for c in self.auto:
            timed = ", ".join(f"batch {b}: {ms:.3f} ms" for b, ms in c["median_ms"].items())
            speed = f" ({c['vs_fp32']:.2f}x fp32)" if c["vs_fp32"] is not None else ""
            if c["max_abs"] is not None:
                speed += f", max_abs {c['max_abs']:.3g}"
            speed += "".join(f"; {m}" for m in c["metrics"])
            lines.append(f"auto: {c['precision']} " + (f"{timed}{speed}" if c["ok"] else "refused: " + c["detail"])
                         + ("  <- chosen" if c["chosen"] else ""))
        stages = "  ".join(f"{k}={v:.2f}s" for k, v in self.stage_seconds.items())
        lines.append(f"stages: {stages}")
        return "\n".join(lines)
