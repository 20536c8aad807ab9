"""optimize() with exact int8/bf16 retrieval: which op each precision gets,
and a saved model whose ids and scores are the fp32 scan's."""
import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.conftest import saved_model_nodes

N, D, K = 30_000, 32, 50


def _save(path, candidates):
    class Retrieval(tf.Module):
        def __init__(self):
            super().__init__()
            self.c = tf.constant(candidates)

        @tf.function(input_signature=[tf.TensorSpec([None, D], tf.float32, name="query")])
        def serve(self, q):
            scores, ids = tf.math.top_k(tf.matmul(q, self.c, transpose_b=True), K)
            return {"scores": scores, "ids": ids}

    module = Retrieval()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def _serve(path, q):
    out = tf.saved_model.load(path).signatures["serving_default"](query=tf.constant(q))
    return out["scores"].numpy(), out["ids"].numpy()


def _candidates(seed=0):
    rng = np.random.default_rng(seed)
    norms = 10.0 ** rng.uniform(-1, 1, (N, 1))  # per-row scales that differ by 100x
    return (rng.standard_normal((N, D)) * norms).astype(np.float32)


@pytest.mark.parametrize("precision, op, tcand", [
    ("int8", "Recopt>ExactScoreTopK", tf.int8), ("bf16", "Recopt>ExactScoreTopK", tf.bfloat16),
    ({"retrieval": "int8"}, "Recopt>ExactScoreTopK", tf.int8),
    ("int8_approx", "Recopt>ScoreTopK", tf.int8), ("bf16_approx", "Recopt>ScoreTopK", tf.bfloat16)])
def test_precision_picks_the_op(ops, tmp_path, precision, op, tcand):
    src = _save(tmp_path / "m", _candidates())
    out = str(tmp_path / "opt")
    report = tf_recopt.optimize(src, out, precision=precision)
    (node,) = saved_model_nodes(out, op)
    assert node.attr["Tcand"].type == tcand.as_datatype_enum
    exact = op == "Recopt>ExactScoreTopK"
    assert ("exact" in str(report)) == exact, str(report)
    q = np.random.default_rng(1).standard_normal((16, D)).astype(np.float32)
    want_scores, want_ids = _serve(src, q)
    scores, ids = _serve(out, q)
    if exact:
        # The fp32 answer: ids as stock's (no near-ties at this seed), scores to fp32 rounding.
        np.testing.assert_array_equal(ids, want_ids)
        np.testing.assert_allclose(scores, want_scores, rtol=1e-5, atol=1e-5)
        assert report.precision["retrieval"] in ("int8", "bf16")


def test_report_counts_survivors_on_the_parity_queries(ops, tmp_path):
    """The report says how many candidates each parity query rescored in
    fp32 (at least k, far fewer than n here), and counts a NaN query as one
    that took the fp32 scan."""
    src = _save(tmp_path / "m", _candidates())
    q = np.random.default_rng(2).standard_normal((12, D)).astype(np.float32)
    q[5, 0] = np.nan
    report = tf_recopt.optimize(src, str(tmp_path / "opt"), precision="int8", sample_inputs={"query": q})
    (stats,) = report.signatures["serving_default"].survivors
    assert (stats.candidates, stats.queries, stats.fallbacks) == (N, 12, 1)
    assert K <= stats.median <= stats.max < N // 4, stats
    assert f"of {N} candidates per query; 1 of 12 parity queries took the fp32 scan" in str(report)
    assert report.to_dict()["signatures"]["serving_default"]["survivors"][0]["fallbacks"] == 1
    # The approximate scan has no survivors to count.
    approx = tf_recopt.optimize(src, str(tmp_path / "approx"), precision="int8_approx", sample_inputs={"query": q[:5]})
    assert approx.signatures["serving_default"].survivors == []


def test_retrieval_alone_is_held_to_fp32_tolerance(ops, tmp_path):
    from tf_recopt.options import OptimizeOptions
    opts = OptimizeOptions(precision={"retrieval": "int8"})
    opts.validate_fields()
    assert (opts.rtol, opts.atol) == (1e-4, 1e-5)
    approx = OptimizeOptions(precision={"retrieval": "int8_approx"})
    approx.validate_fields()
    assert approx.rtol == 5e-2


def test_non_finite_candidates_stay_fp32(ops, tmp_path):
    c = _candidates()
    c[7, 3] = np.inf  # no quantization bound exists for an infinite row
    src = _save(tmp_path / "m", c)
    out = str(tmp_path / "opt")
    tf_recopt.optimize(src, out, precision="int8", validate=False)
    assert not saved_model_nodes(out, "Recopt>ExactScoreTopK")
    (node,) = saved_model_nodes(out, "Recopt>ScoreTopK")
    assert node.attr["Tcand"].type == tf.float32.as_datatype_enum


def test_gpu_device_keeps_the_approximate_scan(ops, tmp_path):
    src = _save(tmp_path / "m", _candidates())
    out = str(tmp_path / "opt")
    tf_recopt.optimize(src, out, precision="int8", device="gpu")
    assert not saved_model_nodes(out, "Recopt>ExactScoreTopK")
    (node,) = saved_model_nodes(out, "Recopt>ScoreTopK")
    assert node.attr["Tcand"].type == tf.int8.as_datatype_enum


def test_precision_names_are_checked():
    from tf_recopt.options import parse_precision
    assert parse_precision("retrieval=int8_approx,dense=int8") == {"retrieval": "int8_approx", "dense": "int8"}
    with pytest.raises(ValueError, match="dense supports"):
        parse_precision({"dense": "int8_approx"})
