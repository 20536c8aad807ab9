"""The peer benchmark harness (tf-recopt bench --peers) on small models:
every installed peer runs and agrees with stock TF; a failing or missing
peer is reported with its error, not fatal. Timings are not asserted."""
import importlib.util
import json
import os

import numpy as np
import pytest

from tests import savedmodel_flavours as flavours
from tests.conftest import run_cli
from tf_recopt.peers import PEERS, measure, prepare, suite

INSTALLED = [p for p in PEERS if (p != "onnxruntime" or
                                  (importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("tf2onnx")))
             and (not p.startswith("openvino") or importlib.util.find_spec("openvino"))]


@pytest.fixture(scope="module")
def dlrm_results(zoo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("peers_out")
    results = suite.run({"dlrm": zoo_dir("dlrm")}, str(out), str(out / "work"), batch_sizes=(1, 4),
                        threads=("1", "all"), warmup=1, repeats=3, sla_ms=10_000, max_batch=4)
    return results, out


def test_every_installed_peer_runs_and_agrees(dlrm_results):
    results, _ = dlrm_results
    assert set(results["settings"]["peers"]) == set(PEERS)
    for mode in ("1", "all"):
        run = results["models"]["dlrm"]["runs"][mode]
        for peer in INSTALLED:
            assert "error" not in run["peers"][peer], run["peers"][peer]
            assert run["peers"][peer]["parity"]["ok"], (peer, run["peers"][peer])
        timed = {(r["peer"], r["batch"]) for r in run["timings"]}
        assert timed == {(p, b) for p in INSTALLED for b in (1, 4)}
        assert all(r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"] and r["calls"] == 3 for r in run["timings"])
        # A 10 s SLA holds at every batch up to max_batch for every peer.
        assert {p: s["batch"] for p, s in run["sla"].items()} == {p: 4 for p in INSTALLED}


def test_outputs_json_table_and_plots(dlrm_results):
    results, out = dlrm_results
    with open(out / "peers.json") as f:
        assert json.load(f)["models"]["dlrm"]["runs"].keys() == {"1", "all"}
    assert set(results["plots"]) == {"dlrm_latency.png", "speedup_threads_1.png", "speedup_threads_all.png"}
    for name in results["plots"]:
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    table = suite.format_table(results)
    assert "== dlrm  (intra-op threads: 1)" in table and "recopt_stock" in table and "SLA" in table
    best, ratio = suite.best_peer_ratio(results["models"]["dlrm"]["runs"]["1"], 4)
    # Any peer that is not tf-recopt's may be fastest (stock_session often is at batch 4).
    assert best in [p for p in PEERS if p not in suite.OURS] and ratio > 0
    assert suite.best_peer_ratio(results["models"]["dlrm"]["runs"]["1"], 4, among=["xla"])[0] == "xla"


def test_failing_and_missing_peers_are_reported(tmp_path, monkeypatch):
    src = flavours.export_multi_signature(str(tmp_path / "multi"))
    real = importlib.util.find_spec
    monkeypatch.setattr(prepare.importlib.util, "find_spec", lambda name, *a: None if name == "tf2onnx" else real(name, *a))
    results = suite.run({"multi": src}, str(tmp_path / "out"), str(tmp_path / "work"), batch_sizes=(2,),
                        threads=("1",), warmup=1, repeats=2)
    run = results["models"]["multi"]["runs"]["1"]
    assert "not installed (tf2onnx)" in run["peers"]["onnxruntime"]["error"]
    # XLA cannot compile the string hash-table lookup; the run goes on without it.
    assert "XLA" in run["peers"]["xla"]["error"] or "compile" in run["peers"]["xla"]["error"]
    # Nor can OpenVINO convert it (no rule for the hash-table ops): reported, not fatal.
    for peer in ("openvino", "openvino_bf16"):
        assert "error" in run["peers"][peer], run["peers"][peer]
    assert {r["peer"] for r in run["timings"]} == {"stock", "recopt", "recopt_stock", "stock_session",
                                                  "recopt_session", "recopt_bf16_session", "recopt_int8_session"}
    assert "onnxruntime: RuntimeError: not installed" in suite.format_table(results)


def test_crashed_measurement_is_reported(tmp_path):
    spec = dict(model="gone", src=str(tmp_path / "missing"), signature="serving_default", threads="1",
                batch_sizes=[1], warmup=1, repeats=1, sla_ms=None, max_batch=1, seed=0,
                artifacts={"stock": {"path": str(tmp_path / "missing")}})
    result = suite.measure_in_subprocess(spec)
    assert result["error"].startswith("measurement process exited 1")


_OPENVINO_CRASH = """Fatal Python error: Segmentation fault

Thread 0x00007f599c9ff6c0 (most recent call first):
  File "/usr/lib/python3.11/concurrent/futures/thread.py", line 81 in _worker

Current thread 0x00007f5a03e47b80 (most recent call first):
  File "/venv/lib/python3.11/site-packages/openvino/_ov_api.py", line 646 in compile_model
  File "/repo/tf_recopt/peers/runners.py", line 78 in bind
  File "/repo/tf_recopt/peers/measure.py", line 63 in _call_all

Extension modules: numpy._core._multiarray_umath (total: 1)
"""


def test_the_peer_whose_native_code_crashed_is_named():
    artifacts = {"stock": {"path": "a"}, "onnxruntime": {"path": "b"}, "openvino": {"path": "c"},
                 "openvino_bf16": {"error": "conversion failed"}}
    assert suite.crashed_peers(_OPENVINO_CRASH, artifacts) == ["openvino"]
    in_tf = _OPENVINO_CRASH.replace("openvino/_ov_api.py", "tensorflow/python/eager/execute.py")
    assert suite.crashed_peers(in_tf, artifacts) == []
    assert suite.crashed_peers("Segmentation fault (no dump)", artifacts) == []


def test_a_crashing_peer_is_dropped_and_the_rest_measured(monkeypatch):
    """OpenVINO 2026.4's compile_model segfaults on some static-shape f32
    models (DeepCTR's WDL on an AMD EPYC): the rerun without it keeps the
    other peers' timings."""
    import subprocess
    calls = []

    def fake_run(cmd, **kwargs):
        with open(cmd[-1]) as f:
            spec = json.load(f)
        calls.append(spec["artifacts"])
        if "error" not in spec["artifacts"]["openvino"]:
            return subprocess.CompletedProcess(cmd, -11, "", _OPENVINO_CRASH)
        return subprocess.CompletedProcess(cmd, 0, json.dumps({"peers": {}, "timings": ["measured"]}), "")
    monkeypatch.setattr(suite.subprocess, "run", fake_run)
    spec = dict(model="m", artifacts={"stock": {"path": "a"}, "openvino": {"path": "c"}})
    result = suite.measure_in_subprocess(spec)
    assert result["timings"] == ["measured"]
    assert len(calls) == 2 and calls[1]["stock"] == {"path": "a"}
    assert "crashed the measurement process (signal 11)" in calls[1]["openvino"]["error"]


@pytest.mark.parametrize("got,ok", [
    ({"y": [1.0, 2.0005]}, True),          # inside rtol 1e-3
    ({"y": [1.0, 2.01]}, False),
    ({"y": [1.0]}, False),                  # shape
    ({}, False),                            # missing output
])
def test_compare(got, ok):
    assert measure.compare({"y": [1.0, 2.0]}, got)["ok"] is ok


def test_compare_strings_from_onnxruntime_as_bytes():
    assert measure.compare({"ids": [[b"a", b"b"]]}, {"ids": [["a", "b"]]})["ok"]
    assert not measure.compare({"ids": [[b"a", b"b"]]}, {"ids": [["a", "c"]]})["ok"]


def test_compare_ids_as_match_fraction():
    result = measure.compare({"ids": [1, 2, 3, 4]}, {"ids": [1, 2, 4, 3]})
    assert not result["ok"] and result["id_match"] == 0.5


def test_cli_peers_and_bad_peer_set(zoo_dir, tmp_path):
    r = run_cli("bench", "--peers", f"dlrm={zoo_dir('dlrm')}", "--peer-set", "recopt", "--threads", "1",
                "--batch-sizes", "2", "--repeats", "2", "--warmup", "1", "--out", str(tmp_path / "o"), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    run = json.loads(r.stdout)["models"]["dlrm"]["runs"]["1"]
    assert {x["peer"] for x in run["timings"]} == {"stock", "recopt"}
    assert os.path.exists(tmp_path / "o" / "dlrm_latency.png")
    r = run_cli("bench", "--peers", zoo_dir("dlrm"), "--peer-set", "tvm")
    assert r.returncode == 2 and "--peer-set: unknown peer(s) ['tvm']" in r.stderr


def test_onnx_inputs_lower_cased_by_tf2onnx_find_their_signature_input(tmp_path):
    """tf2onnx writes a signature input C0 as c0; the runner binds it anyway,
    and refuses a name that matches no input (or several, ignoring case)."""
    import onnx
    from onnx import TensorProto, helper

    from tf_recopt.peers import runners
    graph = helper.make_graph([helper.make_node("Add", ["c0", "x"], ["y"])], "g",
                              [helper.make_tensor_value_info("c0", TensorProto.FLOAT, [None, 2]),
                               helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    runner = runners.OnnxRunner(path, "1")
    ones = np.ones((3, 2), np.float32)
    out = runner.bind({"C0": ones, "x": 2 * ones})()
    np.testing.assert_array_equal(out["y"], 3 * ones)
    assert runners.feed_key("c0", {"C0": 1, "c0x": 2}) == "C0"
    assert runners.feed_key("c0", {"C0": 1, "c0": 2}) == "c0"
    assert runners.feed_key("c0", {"C0": 1, "C0 ": 2, "x": 3}) == "C0"
    assert runners.feed_key("c1", {"C0": 1}) is None
    with pytest.raises(ValueError, match=r"\['c0'\]"):
        runner.bind({"x": ones})


@pytest.mark.parametrize("threads,intra,inter", [("1", 1, -1), ("all", 0, 0)])
def test_one_thread_session_runs_in_the_callers_thread(zoo_dir, threads, intra, inter):
    """One thread is inline (inter-op -1), as the eager peers and ONNX
    Runtime run: inter-op 1 handed every call to a pool thread and back."""
    from tf_recopt.peers.runners import SessionRunner
    config = SessionRunner(zoo_dir("wdl"), "serving_default", threads)._servable._session._config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (intra, inter)


def test_warm_loop_times_stock_and_recopt(ops, zoo_dir, tmp_path):
    import tf_recopt
    from bench import warm_loop
    optimized = str(tmp_path / "recopt")
    tf_recopt.optimize(zoo_dir("dlrm"), optimized)
    result = warm_loop.measure(zoo_dir("dlrm"), optimized, str(tmp_path), batch=2, rounds=2, inner=2)
    want = {"stock", "recopt"} | ({"onnxruntime"} if "onnxruntime" in INSTALLED else set())
    assert set(result) == want and all(us > 0 for us in result.values()), result
