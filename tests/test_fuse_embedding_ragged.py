"""fuse_embedding on RaggedTensor ids: reduce_sum / reduce_mean over a ragged
lookup becomes a "ragged" feature of Recopt>FusedEmbeddingLookup, with
TensorFlow's answers (a ragged mean of an empty row is NaN), and the row-id
subgraph is recognised by probing what it computes."""
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from grappler_passes import probe
from grappler_passes.graph_view import GraphView
from tests.conftest import run_signature
from tests.graph_util import frozen_graph, ops_of, optimize_graph, run_graph
from tests.legacy_keras_export import RAGGED_ROWS, export_or_fail
from tf_recopt.ragged_feeds import ragged_parents, ragged_splits

RNG = np.random.default_rng(11)
FUSED = "Recopt>FusedEmbeddingLookup"
T = [tf.constant(RNG.standard_normal((rows, dim)).astype(np.float32)) for rows, dim in [(50, 4), (60, 8)]]
I64 = tf.TensorSpec([None], tf.int64)
STOCK = ("UnsortedSegmentSum", "GatherV2", "RealDiv", "Where")


def _ragged(lengths, rows, splits_dtype=np.int64):
    splits = np.concatenate([[0], np.cumsum(lengths)]).astype(splits_dtype)
    return RNG.integers(0, rows, int(splits[-1])).astype(np.int64), splits


def _run_both(fn, specs, feeds):
    graph_def, inputs, outputs = frozen_graph(fn, *specs)
    new, results = optimize_graph(graph_def, inputs, outputs)
    want = run_graph(graph_def, inputs, outputs, feeds)
    got = run_graph(new, inputs, outputs, feeds)
    return ops_of(new), got, want, results


@pytest.mark.parametrize("splits_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("lengths", [[3, 0, 1, 0, 4], [0], [2], [], [5] * 300], ids=["mixed", "one_empty", "one",
                                                                                       "no_rows", "batch300"])
def test_ragged_sum_and_mean_join_one_concat(ops, splits_dtype, lengths):
    def fn(a_values, a_splits, b_values, b_splits):
        a = tf.RaggedTensor.from_row_splits(a_values, a_splits, validate=False)
        b = tf.RaggedTensor.from_row_splits(b_values, b_splits)   # validate=True: asserts on the splits
        return tf.concat([tf.reduce_sum(tf.nn.embedding_lookup(T[0], a), axis=1),
                          tf.reduce_mean(tf.gather(T[1], b), axis=1)], 1)
    splits_spec = tf.TensorSpec([None], tf.as_dtype(splits_dtype))
    a, b = _ragged(lengths, 50, splits_dtype), _ragged(lengths[::-1], 60, splits_dtype)
    ops_after, got, want, _ = _run_both(fn, [I64, splits_spec, I64, splits_spec], [a[0], a[1], b[0], b[1]])
    assert ops_after.count(FUSED) == 1 and "ConcatV2" not in ops_after, " ".join(sorted(ops_after))
    for op in STOCK:
        assert op not in ops_after, ops_after
    # Sums add rows in id order as UnsortedSegmentSum does, and the mean is
    # that sum over the count: bit for bit, NaN for an empty row included.
    np.testing.assert_array_equal(got[0], want[0])
    assert np.isnan(got[0]).any() == (0 in lengths)


def test_ragged_value_rowids_spelling(ops):
    """A hand-written segment reduction over value_rowids() is the same function."""
    def fn(values, splits):
        rt = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
        rows = tf.gather(T[0], rt.values)
        return tf.math.unsorted_segment_sum(rows, rt.value_rowids(), rt.nrows())
    feeds = list(_ragged([2, 0, 3], 50))
    ops_after, got, want, _ = _run_both(fn, [I64, I64], feeds)
    assert FUSED in ops_after and "UnsortedSegmentSum" not in ops_after, ops_after
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("lengths", [[3, 0, 2, 0], [], [0, 0], [4] * 100], ids=["mixed", "no_rows", "empty", "batch100"])
def test_from_row_lengths(ops, lengths):
    """Row lengths instead of splits: the op reads concat([0], cumsum(lengths))."""
    def fn(values, row_lengths):
        rt = tf.RaggedTensor.from_row_lengths(values, row_lengths, validate=False)
        looked = tf.gather(T[1], rt)
        return tf.concat([tf.reduce_sum(looked, axis=1), tf.reduce_mean(looked, axis=1)], 1)
    values = RNG.integers(0, 60, sum(lengths)).astype(np.int64)
    ops_after, got, want, _ = _run_both(fn, [I64, tf.TensorSpec([None], tf.int32)],
                                        [values, np.array(lengths, np.int32)])
    assert ops_after.count(FUSED) == 1 and "UnsortedSegmentSum" not in ops_after, " ".join(sorted(ops_after))
    np.testing.assert_array_equal(got[0], want[0])


def test_ragged_out_of_range_id_errors(ops):
    def fn(values, splits):
        rt = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
        return tf.reduce_sum(tf.gather(T[0], rt), axis=1)
    graph_def, inputs, outputs = frozen_graph(fn, I64, I64)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    assert FUSED in ops_of(new)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"indices\[1\] = 50 is not in \[0, 50\)"):
        run_graph(new, inputs, outputs, [np.array([3, 50], np.int64), np.array([0, 2], np.int64)])


def test_near_misses_stay_stock(ops):
    def fn(values, splits, other):
        rt = tf.RaggedTensor.from_row_splits(values, splits, validate=False)
        rows = tf.gather(T[0], rt.values)
        shifted = tf.math.unsorted_segment_sum(rows, tf.minimum(rt.value_rowids() + 1, 2), 3)  # not row ids
        foreign = tf.math.unsorted_segment_sum(rows, other, 4)                                  # ids from a feed
        return shifted, foreign
    feeds = [np.array([1, 2, 3], np.int64), np.array([0, 1, 3], np.int64), np.array([3, 0, 1], np.int64)]
    ops_after, got, want, _ = _run_both(fn, [I64, I64, I64], feeds)
    assert FUSED not in ops_after and ops_after.count("UnsortedSegmentSum") == 2, ops_after
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_probe_evaluates_a_pure_subgraph():
    def fn(splits):
        rt = tf.RaggedTensor.from_row_splits(tf.zeros_like(splits[1:]), splits, validate=False)
        return rt.value_rowids(), rt.nrows()
    graph_def, inputs, outputs = frozen_graph(fn, tf.TensorSpec([None], tf.int64))
    # A colocation hint naming a node the probed copy leaves out must not break its import.
    graph_def.node.add(name="unrelated", op="NoOp")
    next(n for n in graph_def.node if n.op == "Range").attr["_class"].list.s.append(b"loc:@unrelated")
    view = GraphView(graph_def)
    assert probe.leaves(view, outputs) == [view.source(inputs[0])]
    got = probe.evaluate(view, outputs, inputs, [[np.array([0, 2, 2, 3], np.int64)], [np.zeros((2, 2), np.int64)]])
    np.testing.assert_array_equal(got[0][0], [0, 0, 2])
    assert int(got[0][1]) == 3
    assert got[1] is None  # a matrix for splits: TensorFlow rejects it, and the probe says so


def test_tf_keras_ragged_embedding_saved_model(ops, tmp_path):
    """tf_keras flattens a ragged Input into (values, row_splits) signature
    inputs; optimize() fuses both poolings into one op and, recognising the
    pair from the fused op, generates valid ragged parity inputs itself."""
    src, out = tmp_path / "legacy", str(tmp_path / "opt")
    export_or_fail("ragged", src)
    report = tf_recopt.optimize(str(src), out)
    assert report.parity_ok
    after = report.signatures["serving_default"].ops_after
    assert after.get(FUSED) == 1 and "UnsortedSegmentSum" not in after and "ResourceGather" not in after, after
    values, splits = _ragged([4, 0, 1, 7], RAGGED_ROWS)
    keys = sorted(tf.saved_model.load(str(src)).signatures["serving_default"].structured_input_signature[1])
    feeds = dict(zip(keys, [tf.constant(values), tf.constant(splits)]))   # args_0: values, args_0_1: splits
    want, got = run_signature(str(src), feeds), run_signature(out, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)
        assert np.isnan(got[key][1]).all()   # the empty row's mean is NaN, through the Dense layer


def _nested(outer_lengths, inner_lengths, rows):
    outer = np.concatenate([[0], np.cumsum(outer_lengths)]).astype(np.int64)
    assert outer[-1] == len(inner_lengths)
    inner = np.concatenate([[0], np.cumsum(inner_lengths)]).astype(np.int64)
    return RNG.integers(0, rows, int(inner[-1])).astype(np.int64), outer, inner


def _nested_pooling(values, outer, inner):
    """Sessions of items: each session summed, the sessions averaged; and every id of an example summed."""
    rt = tf.RaggedTensor.from_nested_row_splits(values, [outer, inner], validate=False)
    looked = tf.nn.embedding_lookup(T[1], rt)
    return tf.concat([tf.reduce_mean(tf.reduce_sum(looked, axis=2), axis=1), tf.reduce_sum(looked, axis=[1, 2])], 1)


@pytest.mark.parametrize("outer_lengths,inner_lengths", [
    ([2, 0, 3], [3, 0, 1, 4, 2]),        # an example without sessions, a session without items
    ([1], [5]), ([0, 0], []), ([], []), ([3] * 40, [2] * 120)], ids=["mixed", "one", "no_sessions", "no_rows",
                                                                      "batch40"])
def test_nested_ragged_fuses_the_inner_level(ops, outer_lengths, inner_lengths):
    """A ragged_rank-2 lookup: the innermost reduction (over a session's ids)
    becomes a ragged feature reading the inner row_splits; the outer one
    stays TensorFlow's segment sum over the pooled sessions. Folding both
    into one bag would add the ids in another order, so not bit for bit."""
    feeds = list(_nested(outer_lengths, inner_lengths, 60))
    ops_after, got, want, _ = _run_both(_nested_pooling, [I64, I64, I64], feeds)
    # Of five segment sums, the two inner ones fuse; the outer sum, and the mean's sum and count, stay.
    assert ops_after.count(FUSED) == 1 and ops_after.count("UnsortedSegmentSum") == 3, " ".join(sorted(ops_after))
    np.testing.assert_array_equal(got[0], want[0])


def test_ragged_parents_follow_the_nesting(ops):
    """values -> inner splits -> outer splits, found from the stock graph's
    segment sums and from the optimized graph's fused op alike; generated
    splits then nest: the inner level has as many rows as the outer has values."""
    graph_def, inputs, outputs = frozen_graph(_nested_pooling, I64, I64, I64)
    new, _ = optimize_graph(graph_def, inputs, outputs)
    sig = SimpleNamespace(input_tensors=dict(zip(["values", "outer", "inner"], inputs)))
    for graph in (graph_def, new):
        assert ragged_parents(graph, sig) == {"values": "inner", "inner": "outer"}
    splits = ragged_splits({"values": "inner", "inner": "outer"}, 7, lambda rows: RNG.integers(0, 5, rows))
    assert len(splits["outer"]) == 8 and len(splits["inner"]) == splits["outer"][-1] + 1
    with pytest.raises(ValueError, match="signature input '[ab]': its row_splits nest in a cycle"):
        ragged_splits({"a": "b", "b": "a"}, 3, lambda rows: np.ones(rows, np.int64))


def test_tf_keras_nested_ragged_saved_model(ops, tmp_path):
    """A tf_keras ragged_rank-2 Input (values, outer and inner row_splits):
    optimize() generates nested parity inputs itself and passes parity."""
    src, out = tmp_path / "legacy", str(tmp_path / "opt")
    export_or_fail("nested_ragged", src)
    report = tf_recopt.optimize(str(src), out)
    assert report.parity_ok
    after = report.signatures["serving_default"].ops_after
    assert after.get(FUSED) == 1 and "ResourceGather" not in after, after
    values, outer, inner = _nested([2, 0, 1], [3, 0, 4], RAGGED_ROWS)
    feeds = {"args_0": tf.constant(values), "args_0_1": tf.constant(outer), "args_0_2": tf.constant(inner)}
    want, got = run_signature(str(src), feeds), run_signature(out, feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)
        assert np.isnan(got[key][1]).all()   # no sessions: their mean is NaN
