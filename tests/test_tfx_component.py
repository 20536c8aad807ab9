"""RecOptimizer in real local TFX pipelines (LocalDagRunner, SQLite MLMD in
a temp dir), and its executor's edge cases."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

pytest.importorskip("tfx", reason="the tfx extra is installed by `make install`")  # never skipped under make

from ml_metadata.metadata_store import metadata_store  # noqa: E402
from tfx.dsl.component.experimental.annotations import InputArtifact, Parameter  # noqa: E402
from tfx.dsl.component.experimental.decorators import component  # noqa: E402
from tfx.dsl.components.common import importer  # noqa: E402
from tfx.orchestration import metadata, pipeline  # noqa: E402
from tfx.orchestration.local.local_dag_runner import LocalDagRunner  # noqa: E402
from tfx.types import standard_artifacts  # noqa: E402
from tfx.utils import io_utils  # noqa: E402

import tf_recopt  # noqa: E402
from tests.examples_util import feeds_to_examples, write_examples  # noqa: E402
from tf_recopt import example_feeds  # noqa: E402
from tf_recopt.options import OptimizeOptions  # noqa: E402
from tf_recopt.saved_model_io import load as load_model  # noqa: E402
from tf_recopt.tfx import Executor, RecOptimizer, RecOptimizerError, keys  # noqa: E402
from tf_recopt.verify import generate_inputs, run_signature  # noqa: E402


@component
def ParityCheck(original: InputArtifact[standard_artifacts.Model],
                optimized: InputArtifact[standard_artifacts.Model],
                examples: InputArtifact[standard_artifacts.Examples], result_path: Parameter[str]):
    """The consumer a Pusher would be: loads the optimized artifact as
    Trainer's layout and compares it with the original on the examples."""
    tf_recopt.load_ops()
    want = tf.saved_model.load(os.path.join(original.uri, "Format-Serving")).signatures["serving_default"]
    got = tf.saved_model.load(os.path.join(optimized.uri, "Format-Serving")).signatures["serving_default"]
    records = example_feeds.read_records(example_feeds.tfrecord_files(os.path.join(examples.uri, "Split-eval")), 64)
    sig = load_model(os.path.join(original.uri, "Format-Serving"), OptimizeOptions()).signatures["serving_default"]
    feeds = example_feeds.feeds_from_examples(sig, records)
    expected, actual = run_signature(want, feeds), run_signature(got, feeds)
    diff = max(float(np.max(np.abs(expected[k] - actual[k]))) for k in expected)
    with open(result_path, "w") as f:
        json.dump({"max_abs": diff, "batch": len(records), "outputs": sorted(expected)}, f)


@pytest.fixture(scope="module")
def trainer_output(zoo_dir, tmp_path_factory):
    """A zoo model laid out as Trainer writes it, and an ExampleGen-style split of its inputs."""
    root = tmp_path_factory.mktemp("tfx_inputs")
    src = zoo_dir("dlrm")
    shutil.copytree(src, root / "model" / "Format-Serving")
    sig = load_model(src, OptimizeOptions()).signatures["serving_default"]
    feeds = {k: v.numpy() for k, v in generate_inputs(sig, src, 40, seed=7).items()}
    (root / "examples" / "Split-eval").mkdir(parents=True)
    write_examples(str(root / "examples" / "Split-eval" / "data_tfrecord-00000-of-00001.gz"),
                   feeds_to_examples(feeds), gzip=True)
    return str(root / "model"), str(root / "examples")


def _pipeline(root, model_uri, examples_uri, **optimizer_args):
    model = importer.Importer(source_uri=model_uri, artifact_type=standard_artifacts.Model).with_id("model")
    examples = importer.Importer(source_uri=examples_uri, artifact_type=standard_artifacts.Examples,
                                 properties={"split_names": '["eval"]'}).with_id("examples")
    optimizer = RecOptimizer(model=model.outputs["result"], examples=examples.outputs["result"],
                             parity_batch_size=32, **optimizer_args)
    check = ParityCheck(original=model.outputs["result"], optimized=optimizer.outputs["optimized_model"],
                        examples=examples.outputs["result"], result_path=os.path.join(root, "parity.json"))
    return pipeline.Pipeline(
        pipeline_name="recopt_test", pipeline_root=os.path.join(root, "pipeline"),
        components=[model, examples, optimizer, check],
        metadata_connection_config=metadata.sqlite_metadata_connection_config(os.path.join(root, "mlmd.sqlite")))


def _optimizer_outputs(root):
    store = metadata_store.MetadataStore(
        metadata.sqlite_metadata_connection_config(os.path.join(root, "mlmd.sqlite")))
    executions = [e for e in store.get_executions()
                  if "RecOptimizer" in store.get_execution_types_by_id([e.type_id])[0].name]
    events = store.get_events_by_execution_ids([e.id for e in executions])
    outputs = [ev.artifact_id for ev in events if ev.type == ev.OUTPUT]
    return executions, store.get_artifacts_by_id(outputs)


def test_pipeline_optimizes_and_consumer_sees_parity(trainer_output, tmp_path):
    model_uri, examples_uri = trainer_output
    LocalDagRunner().run(_pipeline(str(tmp_path), model_uri, examples_uri))
    with open(tmp_path / "parity.json") as f:
        result = json.load(f)
    assert result["batch"] == 40 and result["max_abs"] < 1e-4, result
    executions, artifacts = _optimizer_outputs(str(tmp_path))
    assert len(executions) == 1 and len(artifacts) == 1
    out = artifacts[0]
    assert out.custom_properties[keys.OPTIMIZED_PROPERTY].int_value == 1
    report = json.loads(out.custom_properties[keys.REPORT_PROPERTY].string_value)
    assert report["written"] and report["signatures"]["serving_default"]["ops_after"].get("Recopt>FusedEmbeddingLookup")
    parity = report["signatures"]["serving_default"]["parity"]
    assert parity and all(p["ok"] for p in parity)
    assert os.path.exists(os.path.join(out.uri, "Format-Serving", "saved_model.pb"))
    assert os.path.exists(os.path.join(out.uri, "Format-Serving", "assets.extra", "recopt_report.json"))
    assert sorted(os.listdir(model_uri)) == ["Format-Serving"]   # the input is never touched


def test_parity_failure_fails_the_run_before_the_consumer(trainer_output, tmp_path):
    model_uri, examples_uri = trainer_output
    # Zero tolerance alone no longer fails: FusedMLP on oneDNN can give
    # stock TensorFlow's exact bits. bf16 weights at zero tolerance cannot.
    with pytest.raises(Exception) as err:   # LocalDagRunner re-raises what the executor raised
        LocalDagRunner().run(_pipeline(str(tmp_path), model_uri, examples_uri, precision="bf16", rtol=0.0,
                                       atol=0.0))
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    failure = next((x for x in chain if isinstance(x, RecOptimizerError)), None)
    assert failure is not None, [type(x).__name__ for x in chain]
    assert "report:" in str(failure) and failure.report is not None and not failure.report.written
    assert not os.path.exists(tmp_path / "parity.json")
    pipeline_files = [os.path.join(d, f) for d, _, fs in os.walk(tmp_path / "pipeline") for f in fs]
    assert not [p for p in pipeline_files if p.endswith("saved_model.pb")], pipeline_files


def _artifact(kind, uri, **custom):
    artifact = kind()
    artifact.uri = uri
    for name, value in custom.items():
        artifact.set_int_custom_property(name, value)
    return artifact


def _run_executor(tmp_path, model_uri, blessed=None, examples=None, **properties):
    out = _artifact(standard_artifacts.Model, str(tmp_path / "out"))
    inputs = {keys.MODEL: [_artifact(standard_artifacts.Model, model_uri)]}
    if blessed is not None:
        inputs[keys.MODEL_BLESSING] = [_artifact(standard_artifacts.ModelBlessing, str(tmp_path / "b"),
                                                 blessed=blessed)]
    if examples is not None:
        inputs[keys.EXAMPLES] = [examples]
    Executor().Do(inputs, {keys.OPTIMIZED_MODEL: [out]}, properties)
    return out


def test_unblessed_model_is_not_optimized(trainer_output, tmp_path):
    out = _run_executor(tmp_path, trainer_output[0], blessed=0)
    assert out.get_int_custom_property(keys.OPTIMIZED_PROPERTY) == 0
    assert not os.path.exists(tmp_path / "out" / "Format-Serving")
    out = _run_executor(tmp_path, trainer_output[0], blessed=1, custom_ops=0)
    assert out.get_int_custom_property(keys.OPTIMIZED_PROPERTY) == 1
    report = json.loads(out.get_string_custom_property(keys.REPORT_PROPERTY))
    assert not report["custom_ops"] and not any(op.startswith("Recopt>") for op in
                                                report["signatures"]["serving_default"]["ops_after"])


def test_savedmodel_at_artifact_root_and_parameters(zoo_dir, tmp_path):
    out = _run_executor(tmp_path, zoo_dir("dlrm"), passes='["fuse_embedding"]', signatures='["serving_default"]',
                        optimize_options='{"seed": 3}')
    report = json.loads(out.get_string_custom_property(keys.REPORT_PROPERTY))
    assert [p["name"] for p in report["signatures"]["serving_default"]["passes"]] == ["fuse_embedding"]
    assert os.path.exists(tmp_path / "out" / "Format-Serving" / "saved_model.pb")


def test_label_key_judges_by_auc_and_logloss(ops, tmp_path):
    """The eval split's labels reach optimize(): the report carries AUC and
    logloss of both models for the probability output."""
    from tests.test_accuracy_gate import _data
    src, records = _data(tmp_path, outlier=False, n=600)
    (tmp_path / "ex" / "Split-eval").mkdir(parents=True)
    shutil.copy(records, tmp_path / "ex" / "Split-eval" / "data_tfrecord-00000-of-00001")
    examples = _artifact(standard_artifacts.Examples, str(tmp_path / "ex"))
    examples.split_names = '["eval"]'
    out = _run_executor(tmp_path, src, examples=examples, precision="int8", label_key="clicked",
                        metric_examples=500, max_auc_drop=0.001)
    report = json.loads(out.get_string_custom_property(keys.REPORT_PROPERTY))
    (m,) = report["signatures"]["serving_default"]["metrics"]
    assert m["ok"] and m["examples"] == 500 and m["label"] == "clicked" and 0.6 < m["auc"] < 1


@pytest.mark.parametrize("properties,match", [
    ({"optimize_options": '{"no_such_field": 1}'}, r"optimize_options: unknown field\(s\) \['no_such_field'\]"),
    ({"passes": '"fuse_embedding"'}, "passes: expected a JSON list"),
    ({"precision": "fp8"}, "precision='fp8'"),
])
def test_bad_parameters_are_named(zoo_dir, tmp_path, properties, match):
    with pytest.raises(ValueError, match=match):
        _run_executor(tmp_path, zoo_dir("dlrm"), **properties)
    assert not os.path.exists(tmp_path / "out" / "Format-Serving")


def test_missing_model_and_split_are_named(trainer_output, tmp_path):
    with pytest.raises(ValueError, match="no saved_model.pb"):
        _run_executor(tmp_path, str(tmp_path))
    examples = _artifact(standard_artifacts.Examples, trainer_output[1])
    examples.split_names = '["eval"]'
    with pytest.raises(ValueError, match=r"examples_split 'train'.*has splits \['eval'\]"):
        _run_executor(tmp_path, trainer_output[0], examples=examples, examples_split="train")


def test_remote_uris_are_staged_through_a_local_dir(zoo_dir):
    io_utils.copy_dir(zoo_dir("dlrm"), "ram://recopt_test/model/Format-Serving")
    out = _artifact(standard_artifacts.Model, "ram://recopt_test/out")
    Executor().Do({keys.MODEL: [_artifact(standard_artifacts.Model, "ram://recopt_test/model")]},
                  {keys.OPTIMIZED_MODEL: [out]}, {})
    assert tf.io.gfile.exists("ram://recopt_test/out/Format-Serving/saved_model.pb")
    assert tf.io.gfile.exists("ram://recopt_test/out/Format-Serving/assets.extra/recopt_report.json")
    tf_recopt.load_ops()
    feeds = generate_inputs(load_model(zoo_dir("dlrm"), OptimizeOptions()).signatures["serving_default"],
                            zoo_dir("dlrm"), 3)
    want = run_signature(tf.saved_model.load(zoo_dir("dlrm")).signatures["serving_default"], feeds)
    got = run_signature(tf.saved_model.load("ram://recopt_test/out/Format-Serving").signatures["serving_default"],
                        feeds)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-5)


def test_remote_output_untouched_when_parity_fails(zoo_dir):
    io_utils.copy_dir(zoo_dir("dlrm"), "ram://recopt_fail/model")
    out = _artifact(standard_artifacts.Model, "ram://recopt_fail/out")
    with pytest.raises(RecOptimizerError, match="nothing was written"):
        Executor().Do({keys.MODEL: [_artifact(standard_artifacts.Model, "ram://recopt_fail/model")]},
                      {keys.OPTIMIZED_MODEL: [out]}, {keys.RTOL: 0.0, keys.ATOL: 0.0})
    assert not tf.io.gfile.exists("ram://recopt_fail/out/Format-Serving")
