"""optimize(): SavedModel flavours, signatures and assets preserved, atomic
writes, untouched inputs, clear errors, the report."""
import hashlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from grappler_passes import pipeline
from grappler_passes.pass_base import GraphPass
from tests import savedmodel_flavours as flavours
from tests.conftest import assert_outputs_close, run_signature, saved_model_nodes


RNG = np.random.default_rng(29)


def _tree_digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            p = os.path.join(root, f)
            h.update(p.encode())
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


@pytest.fixture
def multi_sig(tmp_path):
    return flavours.export_multi_signature(str(tmp_path / "multi"))


def test_multi_signature_module_with_asset_and_mixed_dtypes(ops, multi_sig, tmp_path):
    out = str(tmp_path / "out")
    report = tf_recopt.optimize(multi_sig, out)
    assert set(report.signatures) == {"serving_default", "embed"}
    assert report.parity_ok
    assert os.listdir(os.path.join(out, "assets")) == ["vocab.txt"]
    feeds = {"dense": tf.random.normal([3, 4]), "word": tf.constant([b"banana", b"zzz", b"pad"]),
             "slot": tf.constant([1, 2, 3], tf.int32)}
    assert_outputs_close(run_signature(multi_sig, feeds), run_signature(out, feeds))
    new = tf.saved_model.load(out).signatures
    assert new["embed"].structured_input_signature[1]["item"].dtype == tf.int64
    assert new["serving_default"].structured_input_signature[1]["dense"].shape.as_list() == [None, 4]
    assert report.signatures["serving_default"].ops_after.get("Recopt>FusedMLP") == 1  # both layers, one op


def test_tf1_builder_export(ops, tmp_path):
    src = flavours.export_tf1_builder(str(tmp_path / "tf1"))
    out = str(tmp_path / "out")
    report = tf_recopt.optimize(src, out)
    assert report.parity_ok and report.signatures["serving_default"].ops_after.get("Recopt>FusedMLP")
    feeds = {"features": tf.random.normal([7, 6])}
    assert_outputs_close(run_signature(src, feeds), run_signature(out, feeds))


def test_parsing_signature_with_tfrecord_parity_inputs(ops, tmp_path):
    src = flavours.export_parsing(str(tmp_path / "parse"))
    records = flavours.write_examples(str(tmp_path / "ex.tfrecord"))
    report = tf_recopt.optimize(src, str(tmp_path / "out"), sample_inputs=records)
    assert report.parity_ok and report.signatures["serving_default"].parity


def test_sample_inputs_dict(ops, zoo_dir, tmp_path):
    feeds = {"dense_features": np.zeros([2, 13], np.float32), **{f"cat_{i}": np.array([0, 1]) for i in range(4)}}
    report = tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "out"), sample_inputs=feeds)
    assert report.parity_ok
    with pytest.raises(ValueError, match="lack input"):
        tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "out2"), sample_inputs={"dense_features": feeds["dense_features"]})
    assert not os.path.exists(tmp_path / "out2")


def test_big_tables_stay_variables(ops, zoo_dir, tmp_path):
    out = str(tmp_path / "out")
    report = tf_recopt.optimize(zoo_dir("dlrm"), out, freeze_max_bytes=20_000)
    assert any("emb_" in v for v in report.kept_variables)
    loaded = tf.saved_model.load(out)
    assert any("emb_" in v.name for v in loaded.recopt_resources)
    assert report.parity_ok


def test_input_untouched_and_default_output_name(ops, zoo_dir, tmp_path):
    src = zoo_dir("wdl")
    before = _tree_digest(src)
    report = tf_recopt.optimize(src)
    try:
        assert report.output_dir == src + "_recopt"
        assert _tree_digest(src) == before
        with pytest.raises(FileExistsError):
            tf_recopt.optimize(src)
        tf_recopt.optimize(src, overwrite=True)
    finally:
        import shutil
        shutil.rmtree(src + "_recopt", ignore_errors=True)


class _BreakNumerics(GraphPass):
    """Doubles every float Const: the graph stays valid, the answers do not."""
    name = "break_numerics"

    def run(self, ctx, result):
        from tensorflow.python.framework import tensor_util
        for node in ctx.view.nodes():
            if node.op == "Const" and node.attr["dtype"].type == tf.float32.as_datatype_enum:
                value = tensor_util.MakeNdarray(node.attr["value"].tensor) * 2
                node.attr["value"].tensor.CopyFrom(tensor_util.make_tensor_proto(value))
                result.apply()


def test_parity_failure_writes_nothing(ops, zoo_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(pipeline._PASSES, _BreakNumerics.name, _BreakNumerics)
    out = tmp_path / "out"
    with pytest.raises(tf_recopt.ParityError, match="ctr") as info:
        tf_recopt.optimize(zoo_dir("dlrm"), str(out), passes=["break_numerics"])
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".recopt_tmp")]
    assert not info.value.report.parity_ok


def test_no_custom_ops_output_has_only_stock_ops(ops, zoo_dir, tmp_path):
    out = str(tmp_path / "out")
    report = tf_recopt.optimize(zoo_dir("dlrm"), out, custom_ops=False)
    with open(os.path.join(out, "saved_model.pb"), "rb") as f:
        assert b"Recopt>" not in f.read()
    assert report.parity_ok and report.rewrites().get("prune_identity", 0) > 0


def test_report_written_into_model(ops, zoo_dir, tmp_path):
    out = str(tmp_path / "out")
    report = tf_recopt.optimize(zoo_dir("dlrm"), out)
    with open(os.path.join(out, "assets.extra", "recopt_report.json")) as f:
        saved = json.load(f)
    assert saved["parity_ok"] and saved["signatures"]["serving_default"]["passes"][0]["name"] == "prune_identity"
    assert set(saved["stage_seconds"]) == {"load", "passes", "write", "verify"}
    text = str(report)
    assert "fuse_dense" in text and "parity ctr" in text


def test_bad_inputs_give_clear_errors(ops, zoo_dir, tmp_path):
    with pytest.raises(tf_recopt.SavedModelError, match="not a directory"):
        tf_recopt.optimize(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(tf_recopt.SavedModelError, match="no saved_model.pb"):
        tf_recopt.optimize(str(tmp_path / "empty"))
    with pytest.raises(tf_recopt.SavedModelError, match="no signature.*'nope'"):
        tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "o"), signatures=["nope"])
    with pytest.raises(pipeline.UnknownPassError, match="nope"):
        tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "o"), passes=["nope"])
    with pytest.raises(ValueError, match="inside"):
        tf_recopt.optimize(zoo_dir("dlrm"), os.path.join(zoo_dir("dlrm"), "x"))
    assert not os.path.exists(tmp_path / "o")


def test_signature_subset_rewrites_only_those(ops, multi_sig, tmp_path):
    report = tf_recopt.optimize(multi_sig, str(tmp_path / "out"), signatures=["embed"])
    assert report.signatures["serving_default"].passes == []
    assert report.signatures["embed"].passes
    assert report.parity_ok


def test_bf16_precision_on_zoo_models(ops, zoo_dir, tmp_path):
    for name in ("dlrm", "din"):
        out = str(tmp_path / name)
        report = tf_recopt.optimize(zoo_dir(name), out, precision="bf16")
        assert report.parity_ok
        assert all(p.max_abs > 0 for p in report.signatures["serving_default"].parity)  # weights really rounded
        fused = saved_model_nodes(out, "Recopt>FusedMLP")
        assert fused and all(n.attr["weights_bf16"].b for n in fused)
    with pytest.raises(ValueError, match="precision"):
        tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "x"), precision="int4")


def test_int8_precision_quantizes_wide_dense_layers(ops, zoo_dir, tmp_path):
    """precision="int8": every FusedMLP layer at least 16 wide both ways
    multiplies in int8 (fuse_dense.INT8_MIN_WIDTH), the narrow heads stay
    fp32, and the model stays inside the int8 parity tolerance."""
    from grappler_passes.fuse_dense import int8_worthy
    for name in ("dlrm", "dcn"):
        out = str(tmp_path / name)
        report = tf_recopt.optimize(zoo_dir(name), out, precision="int8")
        assert report.parity_ok
        fused = saved_model_nodes(out, "Recopt>FusedMLP")
        assert any(n.attr["int8_layers"].list.i for n in fused), name
        consts = {n.name: n for n in saved_model_nodes(out, "Const")}
        for node in fused:
            layers = node.attr["num_layers"].i
            shapes = [[d.size for d in consts[w.split(":")[0]].attr["value"].tensor.tensor_shape.dim]
                      for w in node.input[1:1 + layers]]
            assert list(node.attr["int8_layers"].list.i) == [i for i, s in enumerate(shapes) if int8_worthy(*s)]


class _SparseComponents(tf.Module):
    def __init__(self):
        self.table = tf.Variable(np.ones((40, 4), np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.int64), tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([2], tf.int64)])
    def serve(self, indices, values, shape):
        sp = tf.SparseTensor(indices, values, shape)
        return {"out": tf.nn.embedding_lookup_sparse(self.table, sp, None, combiner="sum")}


def test_original_model_failing_on_generated_inputs_is_a_clear_error(ops, tmp_path):
    """Random SparseTensor components are not a valid SparseTensor: the
    original model itself fails, and the error says so and what to do."""
    src, out = str(tmp_path / "m"), tmp_path / "out"
    m = _SparseComponents()
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    with pytest.raises(tf_recopt.ParityError, match=r"signature 'serving_default': the original model failed on "
                                                    r"the parity inputs: .*sample_inputs=") as info:
        tf_recopt.optimize(src, str(out))
    assert "nothing was written" in str(info.value) and not out.exists()
    assert info.value.report is not None


@pytest.mark.parametrize("value, want", [
    ("int8", "int8"),
    ({"dense": "int8"}, {"dense": "int8"}),
    ("dense=int8, retrieval=bf16", {"dense": "int8", "retrieval": "bf16"}),
])
def test_precision_per_component_parses(value, want):
    from tf_recopt.options import OptimizeOptions
    opts = OptimizeOptions(precision=value)
    opts.validate_fields()
    assert opts.precision == want
    # The loosest component sets the default tolerance.
    assert (opts.rtol, opts.atol) == (5e-2, 5e-2)
    if isinstance(want, dict):
        assert opts.precision_for("embedding") == "fp32"
    else:
        assert opts.precision_for("embedding") == "int8" and opts.precision_for("dense") == "int8"


@pytest.mark.parametrize("value, message", [
    ("int4", "supported"),
    ({"tables": "bf16"}, "unknown component 'tables'"),
    ({"embedding": "fp16"}, "embedding='fp16'; embedding supports"),
    ("dense=int8,retrieval", "component=precision pairs"),
])
def test_bad_precision_names_what_is_wrong(value, message):
    from tf_recopt.options import OptimizeOptions
    with pytest.raises(ValueError, match=message):
        OptimizeOptions(precision=value).validate_fields()


def test_precision_per_component_reaches_each_pass(ops, zoo_dir, tmp_path):
    """{"retrieval": "int8"}: int8 candidates, fp32 dense layers; and the
    other way round. A mapping naming dense=int8 gets no fp32 fallback."""
    from tests.test_fused_mlp_int8 import INT8
    src = zoo_dir("two_tower")
    for precision, cand, dense_int8 in (({"retrieval": "int8"}, "DT_INT8", False),
                                        ("dense=int8,retrieval=bf16", "DT_BFLOAT16", True)):
        out = str(tmp_path / str(len(cand)))
        try:
            report = tf_recopt.optimize(src, out, precision=precision)
        except tf_recopt.ParityError as exc:
            assert INT8 and dense_int8 and "recall@50" in str(exc), exc
            continue
        assert not report.precision_fallbacks
        topks = saved_model_nodes(out, "Recopt>ExactScoreTopK")  # int8/bf16 retrieval is exact
        assert topks and all(tf.dtypes.as_dtype(t.attr["Tcand"].type).name == cand.lower()[3:] for t in topks)
        fused = saved_model_nodes(out, "Recopt>FusedMLP")
        assert fused and any(n.attr["int8_layers"].list.i for n in fused) == dense_int8


def test_int8_embedding_tables_are_8bit_rowwise(ops, zoo_dir, tmp_path):
    """embedding=int8: every fused lookup reads uint8 row-wise tables; the
    zoo DLRM's tables kept as variables (freeze_table_max_bytes=0), derived
    uint8 variables replace the fp32 ones in the written model. Parity
    holds at the int8 tolerance, and the rows were really rounded."""
    out = str(tmp_path / "o")
    report = tf_recopt.optimize(zoo_dir("dlrm"), out, precision={"embedding": "int8"}, freeze_table_max_bytes=0)
    assert report.parity_ok and report.precision["embedding"] == "int8"
    assert all(p.max_abs > 0 for p in report.signatures["serving_default"].parity)
    fused = saved_model_nodes(out, "Recopt>FusedEmbeddingLookup")
    assert fused
    for node in fused:
        tables = len(node.attr["Ttables"].list.type)
        assert all(i.split(":")[0].endswith("recopt_rowwise8") for i in node.input[:tables]), list(node.input)
    reader = tf.train.load_checkpoint(os.path.join(out, "variables", "variables"))
    tables = {k: reader.get_tensor(k) for k, shape in reader.get_variable_to_shape_map().items() if len(shape) == 2}
    assert tables and all(t.dtype == np.uint8 and t.shape[1] > 8 for t in tables.values()), \
        {k: (t.dtype, t.shape) for k, t in tables.items()}


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_small_tables_are_frozen_large_ones_stay_variables(ops, tmp_path, precision):
    """Tables up to freeze_table_max_bytes become constants the fused lookup
    reads (in the precision's storage); larger ones stay variables; the
    answers are the original's either way, out-of-range ids still fail."""
    class Tables(tf.Module):
        def __init__(self):
            self.small = tf.Variable(RNG.standard_normal((50, 4)).astype(np.float32), name="small")
            self.large = tf.Variable(RNG.standard_normal((3000, 4)).astype(np.float32), name="large")

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int64), tf.TensorSpec([None], tf.int64)])
        def serve(self, a, b):
            return {"out": tf.concat([tf.gather(self.small, a), tf.gather(self.large, b)], 1)}

    m, src, out = Tables(), str(tmp_path / "m"), str(tmp_path / "o")
    tf.saved_model.save(m, src, signatures={"serving_default": m.serve})
    feeds = dict(a=tf.constant([0, 49, 7], tf.int64), b=tf.constant([2999, 0, 5], tf.int64))
    report = tf_recopt.optimize(src, out, sample_inputs=feeds, precision=precision,
                                freeze_table_max_bytes=20_000)   # small: 800 bytes, large: 48 KB
    assert report.parity_ok
    assert any("large" in v for v in report.kept_variables), report.kept_variables
    assert not any("small" in v for v in report.kept_variables), report.kept_variables
    (fused,) = saved_model_nodes(out, "Recopt>FusedEmbeddingLookup")
    kinds = list(fused.attr["Ttables"].list.type)
    assert tf.resource.as_datatype_enum in kinds, kinds
    assert (tf.uint8 if precision == "int8" else tf.float32).as_datatype_enum in kinds, kinds
    loaded = tf.saved_model.load(out).signatures["serving_default"]
    np.testing.assert_allclose(loaded(**feeds)["out"].numpy(), m.serve(**feeds)["out"].numpy(),
                               rtol=0.05 if precision == "int8" else 1e-6, atol=0.05 if precision == "int8" else 1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="= 50 is not in"):
        loaded(a=tf.constant([50], tf.int64), b=tf.constant([0], tf.int64))
