"""Parity inputs (generated from the graph, or given) and output comparison."""
import dataclasses
import os
import threading
from typing import Dict, Optional

import numpy as np
import tensorflow as tf

from grappler_passes.graph_view import GraphView, is_stateful, parse_input
from tf_recopt import example_feeds
from tf_recopt.ops.retrieval import EXACT_OP_NAME, OP_NAME as SCORE_TOPK_OP, recall_at_k
from tf_recopt.ragged_feeds import ragged_parents, ragged_splits

# Ops through which an integer input keeps its meaning as an index.
_PASS_THROUGH = frozenset({"Identity", "Cast", "Reshape", "ExpandDims", "Squeeze", "StridedSlice",
                           "Slice", "ConcatV2", "Pack", "Unpack", "Split", "SplitV", "Less", "AddV2",
                           "SelectV2", "Select", "Unique", "GatherV2", "Tile"})
# Ops whose input 1 holds row ids into the table at input 0.
_GATHER_PARAMS = frozenset({"GatherV2", "ResourceGather", "Gather", "SparseSegmentSum", "SparseSegmentMean",
                            "SparseSegmentSqrtN", "SparseSegmentSumWithNumSegments",
                            "SparseSegmentMeanWithNumSegments", "SparseSegmentSqrtNWithNumSegments"})
DEFAULT_ID_RANGE = 10


@dataclasses.dataclass
class OutputParity:
    signature: str
    output: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""
    recall: Optional[float] = None   # retrieval ids: mean recall@k vs the original


@dataclasses.dataclass
class Survivors:
    """How hard one exact-retrieval op (Recopt>ExactScoreTopK) worked on the
    parity queries: candidates rescored in fp32 per query, and the queries
    that took the fp32 scan instead (NaN/inf queries, too many near-ties)."""
    signature: str
    node: str
    candidates: int
    queries: int
    median: float
    max: int
    fallbacks: int


def exact_retrieval_survivors(signature, graph_def, run_probe):
    """A Survivors per exact-retrieval op of graph_def; run_probe(tensors)
    returns those tensors' values on the parity inputs."""
    nodes = [n for n in graph_def.node if n.op == EXACT_OP_NAME]
    if not nodes:
        return []
    stats = []
    for node, counts in zip(nodes, run_probe([f"{n.name}:2" for n in nodes])):
        counts = np.asarray(counts).reshape(-1)
        scanned = counts[counts >= 0]
        stats.append(Survivors(signature, node.name, int(node.attr["num_candidates"].i), int(counts.size),
                               float(np.median(scanned)) if scanned.size else 0.0,
                               int(scanned.max()) if scanned.size else 0, int((counts < 0).sum())))
    return stats


def id_upper_bounds(sig):
    """input key -> exclusive upper bound for ids, from the tables they index."""
    view = GraphView(sig.graph_def)
    bounds = {}
    for key, tensor in sig.input_tensors.items():
        bound = _walk_bound(view, tensor.split(":")[0], sig)
        if bound:
            bounds[key] = bound
    return bounds


def _walk_bound(view, start, sig, limit=2000):
    seen, stack, best = set(), [start], None
    while stack and len(seen) < limit:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        for consumer, index in view.consumers(name):
            rows = _table_rows(view, consumer, index, sig)
            if rows:
                best = rows if best is None else min(best, rows)
            elif consumer.op in _PASS_THROUGH:
                stack.append(consumer.name)
    return best


def _table_rows(view, consumer, index, sig):
    """Rows of the table `consumer` gathers from, if input `index` is its ids."""
    if consumer.op not in _GATHER_PARAMS or index != 1:
        return None
    params = view.skip_identity(view.data_inputs(consumer)[0])
    value = view.const_value(params)
    if value is not None:
        return value.shape[0]
    for placeholder, owner in sig.captures:
        if placeholder.split(":")[0] == params.split(":")[0] and isinstance(owner, tf.Variable):
            return owner.shape[0]
    return None


def _vocabulary(model_dir):
    assets = os.path.join(model_dir, "assets")
    words = []
    if os.path.isdir(assets):
        for name in sorted(os.listdir(assets)):
            with open(os.path.join(assets, name), "rb") as f:
                words += [w.strip() for w in f.read().splitlines()[:1000] if w.strip()]
    return words


def generate_inputs(sig, model_dir, batch_size, seed=0, ragged=None):
    """Random inputs for a signature: ids inside their tables, strings from
    vocabularies, and valid row_splits (rows of 0-4 entries) for the ragged
    inputs in `ragged` (ragged_feeds.ragged_parents: {key: splits key})."""
    rng = np.random.default_rng(seed)
    bounds = id_upper_bounds(sig)
    vocab = _vocabulary(model_dir)
    ragged = ragged or {}
    splits = ragged_splits(ragged, batch_size, lambda rows: rng.integers(0, 5, rows))
    feeds = {}
    for key, spec in sig.input_specs.items():
        if key in splits:
            feeds[key] = tf.constant(splits[key], dtype=spec.dtype)
            continue
        shape = [batch_size if i == 0 and d is None else (d if d is not None else 4)
                 for i, d in enumerate(spec.shape.as_list())] if spec.shape.rank is not None else [batch_size]
        if key in ragged:
            shape[0] = int(splits[ragged[key]][-1])
        feeds[key] = _random_tensor(rng, spec.dtype, shape, bounds.get(key), vocab)
    return feeds


def _random_tensor(rng, dtype, shape, bound, vocab):
    if dtype.is_floating:
        return tf.constant(rng.standard_normal(shape), dtype=dtype)
    if dtype.is_integer:
        return tf.constant(rng.integers(0, bound or DEFAULT_ID_RANGE, size=shape), dtype=dtype)
    if dtype == tf.bool:
        return tf.constant(rng.random(shape) < 0.5)
    if dtype == tf.string:
        pool = vocab + [f"oov_{i}".encode() for i in range(8)]
        picks = rng.integers(0, len(pool), size=shape)
        return tf.constant(np.vectorize(lambda i: pool[i], otypes=[object])(picks) if picks.size else
                           np.zeros(shape, dtype=object), dtype=tf.string)
    raise ValueError(f"cannot generate inputs of dtype {dtype.name}")


def inputs_for(sig, model_dir, options, optimized_graph=None):
    """The parity feeds for one signature: user-given or generated (ragged
    inputs found in `optimized_graph`, else in the signature's, get valid row_splits)."""
    given = options.sample_inputs
    if given is None:
        ragged = ragged_parents(optimized_graph if optimized_graph is not None else sig.graph_def, sig)
        return generate_inputs(sig, model_dir, options.parity_batch_size, options.seed, ragged)
    if isinstance(given, (str, os.PathLike, list, tuple)):
        records = example_feeds.read_records(example_feeds.tfrecord_files(given), options.parity_batch_size)
        return example_feeds.feeds_from_examples(sig, records)
    if isinstance(given, dict) and sig.name in given and isinstance(given[sig.name], dict):
        given = given[sig.name]
    missing = [k for k in sig.input_specs if k not in given]
    if missing:
        raise ValueError(f"sample_inputs for signature '{sig.name}' lack input(s) {missing}")
    return {k: tf.convert_to_tensor(given[k], dtype=sig.input_specs[k].dtype) for k in sig.input_specs}


# Ops that carry top-k indices (or what they index) to an output unchanged in meaning.
_ID_CARRIERS = {"Identity": (0,), "Cast": (0,), "GatherV2": (1,), "ResourceGather": (1,), "Gather": (1,),
                "SelectV2": (1, 2), "Select": (1, 2), "AddV2": (0, 1), "Add": (0, 1), "Reshape": (0,),
                "ExpandDims": (0,), "Squeeze": (0,)}


def retrieval_outputs(graph_def, output_tensors):
    """Output keys computed from a fused score+top-k's indices: ids whose
    order among near-equal scores depends on the dot products' rounding, so
    they are compared as sets (recall@k) rather than element by element."""
    view = GraphView(graph_def)
    found = set()
    for key, tensor in output_tensors.items():
        stack, seen = [parse_input(tensor)], set()
        while stack and len(seen) < 64:
            name, port = stack.pop()
            node = view.node(name)
            if node is None or (name, port) in seen:
                continue
            seen.add((name, port))
            if node.op in (SCORE_TOPK_OP, EXACT_OP_NAME) and port == 1:
                found.add(key)
                break
            inputs = view.data_inputs(node)
            stack += [parse_input(inputs[i]) for i in _ID_CARRIERS.get(node.op, ()) if i < len(inputs)]
    return found


def compare(signature, expected: Dict, actual: Dict, rtol, atol, retrieval=(), recall_floor=1.0):
    """One OutputParity per output key of `expected`; keys in `retrieval` are
    compared by recall@k over their last axis against `recall_floor`."""
    results = []
    for key, exp in expected.items():
        exp = np.asarray(exp)
        act = np.asarray(actual.get(key)) if key in actual else None
        if act is None or act.shape != exp.shape or act.dtype != exp.dtype:
            detail = "missing" if act is None else f"got {act.dtype}{list(act.shape)}, want {exp.dtype}{list(exp.shape)}"
            results.append(OutputParity(signature, key, float("inf"), float("inf"), False, detail))
            continue
        if key in retrieval and exp.ndim >= 1:
            results.append(_compare_ids(signature, key, exp, act, recall_floor))
        else:
            results.append(_compare_arrays(signature, key, exp, act, rtol, atol))
    return results


def _compare_ids(signature, key, exp, act, floor):
    recall = recall_at_k(exp, act)
    ok = recall >= floor
    detail = "" if ok else f"recall@{exp.shape[-1]} {recall:.4f} < recall_floor {floor}"
    gap = 0.0 if np.array_equal(exp, act) else 1.0 - recall
    return OutputParity(signature, key, gap, gap, ok, detail, recall=recall)


def _compare_arrays(signature, key, exp, act, rtol, atol):
    if exp.dtype.kind in "fc":
        e64, a64 = exp.astype(np.float64), act.astype(np.float64)
        nan_ok = np.array_equal(np.isnan(e64), np.isnan(a64))
        finite = ~np.isnan(e64)
        diff = np.abs(e64 - a64)[finite] if exp.size else np.zeros(0)
        max_abs = float(diff.max()) if diff.size else 0.0
        denom = np.maximum(np.abs(e64[finite]), 1e-12) if exp.size else np.ones(0)
        max_rel = float((diff / denom).max()) if diff.size else 0.0
        ok = nan_ok and bool(np.allclose(a64, e64, rtol=rtol, atol=atol, equal_nan=True))
        return OutputParity(signature, key, max_abs, max_rel, ok, "" if nan_ok else "NaN positions differ")
    equal = np.array_equal(exp, act)
    return OutputParity(signature, key, 0.0 if equal else float("inf"), 0.0 if equal else float("inf"), equal,
                        "" if equal else "non-float output differs")


def warm_up(sig, model_dir):
    """Starts the original signature on one generated example in a thread.
    TensorFlow builds and optimizes a function's graph on its first call,
    outside the GIL (2.8 s on DeepCTR's FiBiNET, 8k nodes), so begun right
    after loading it overlaps the passes instead of lengthening the parity
    check, whose own call then finds it ready. Join the thread before that
    check; a failure here is left for it to report. None when the
    signature may write state (a counter, a random generator): the model
    is saved after this call, and must be saved as it was loaded."""
    if not _reads_state_only(sig.graph_def):
        return None

    def call():
        try:
            sig.function(**generate_inputs(sig, model_dir, 1, ragged=ragged_parents(sig.graph_def, sig)))
        except Exception:  # pylint: disable=broad-except; the parity run meets and explains it
            pass
    thread = threading.Thread(target=call, name=f"recopt-warm-up-{sig.name}", daemon=True)
    thread.start()
    return thread


# Stateful ops that only read: a signature made of these and stateless ops
# leaves every variable and table as it found them.
_READ_ONLY = frozenset({"ReadVariableOp", "ResourceGather", "ResourceGatherNd", "LookupTableFindV2",
                        "LookupTableSizeV2", "VarHandleOp", "HashTableV2", "MutableHashTableV2"})


def _reads_state_only(graph_def):
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return all(n.op in _READ_ONLY or not is_stateful(n.op) for n in nodes)


def run_signature(fn, feeds):
    return {k: v.numpy() for k, v in fn(**feeds).items()}
