"""tf-recopt command line: each subcommand, and one-line errors with exit code 2."""
import json
import os

import pytest

from tests.conftest import run_cli


def test_optimize_inspect_validate_bench(zoo_dir, tmp_path):
    src, out, rep = zoo_dir("dlrm"), str(tmp_path / "out"), str(tmp_path / "r.json")
    r = run_cli("optimize", src, out, "--report", rep)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "fuse_dense" in r.stdout and json.load(open(rep))["parity_ok"]

    r = run_cli("inspect", src, "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout)
    passes = {p["pass"]: p for p in info["signatures"]["serving_default"]["passes"]}
    assert passes["fuse_dense"]["would_apply"] == 2
    assert not os.path.exists(src + "_recopt")  # inspect writes nothing

    r = run_cli("validate", src, out)
    assert r.returncode == 0 and "ctr" in r.stdout, r.stderr[-3000:]

    r = run_cli("bench", f"stock={src}", f"recopt={out}", "--batch-sizes", "1,8", "--repeats", "5",
                "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads(r.stdout)
    assert {(t["model"], t["batch_size"]) for t in rows} == {(m, b) for m in ("stock", "recopt") for b in (1, 8)}
    assert all(t["median_ms"] > 0 and t["p99_ms"] >= t["median_ms"] for t in rows)


def test_validate_detects_a_different_model(zoo_dir):
    r = run_cli("validate", zoo_dir("dlrm"), zoo_dir("dcn"))
    assert r.returncode != 0


@pytest.mark.parametrize("args,message", [
    (["optimize", "/no/such/dir"], "not a directory"),
    (["optimize", "{dlrm}", "{tmp}/o", "--passes", "bogus"], "unknown pass"),
    (["optimize", "{dlrm}", "{tmp}/o", "--signatures", "bogus"], "no signature"),
    (["inspect", "{tmp}"], "not a SavedModel"),
    (["optimize", "{dlrm}", "{tmp}/o", "--sample-examples", "{tmp}/none*.gz"], "no TFRecord files"),
])
def test_errors_are_one_line_exit_2(zoo_dir, tmp_path, args, message):
    args = [a.format(dlrm=zoo_dir("dlrm"), tmp=tmp_path) for a in args]
    r = run_cli(*args)
    assert r.returncode == 2
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("tf-recopt ") and message in last
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("precision", ["int8_approx", "retrieval=int8"])
def test_int8_retrieval_optimize_and_validate_report_recall(zoo_dir, tmp_path, precision):
    """The approximate scan loses some of the top 500 (recall_floor 1.0
    refuses it); the exact one returns the fp32 scan's ids."""
    src, out = zoo_dir("two_tower"), str(tmp_path / "int8")
    r = run_cli("optimize", src, out, "--precision", precision)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "recall@k=" in r.stdout
    assert ("retrieval: exact" in r.stdout) == (precision == "retrieval=int8")
    r = run_cli("validate", src, out, "--rtol", "5e-2", "--atol", "5e-2")
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    assert "candidate_ids: recall@k=" in r.stdout
    r = run_cli("validate", src, out, "--rtol", "5e-2", "--atol", "5e-2", "--recall-floor", "1.0")
    if precision == "int8_approx":
        assert r.returncode != 0 and "< recall_floor 1.0" in r.stdout
    else:
        assert r.returncode == 0 and "candidate_ids: recall@k=1.0000" in r.stdout, r.stdout


def test_precision_per_component_on_the_command_line(zoo_dir, tmp_path):
    src = zoo_dir("dlrm")
    r = run_cli("optimize", src, str(tmp_path / "o"), "--precision", "dense=int8,embedding=bf16")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("optimize", src, str(tmp_path / "x"), "--precision", "embedding=fp16")
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and "embedding='fp16'; embedding supports" in last and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()


def test_label_key_on_the_command_line(ops, tmp_path):
    from tests.test_accuracy_gate import _data
    src, records = _data(tmp_path, outlier=False, n=300)
    r = run_cli("optimize", src, str(tmp_path / "o"), "--precision", "int8", "--sample-examples", records,
                "--label-key", "clicked", "--max-auc-drop", "0.001", "--metric-examples", "300")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "accuracy serving_default/ctr vs 'clicked' over 300 examples: AUC" in r.stdout
    r = run_cli("optimize", src, str(tmp_path / "x"), "--sample-examples", records, "--label-key", "nope")
    assert r.returncode == 2 and "has no feature 'nope'" in r.stderr.strip().splitlines()[-1]
