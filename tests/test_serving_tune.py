"""`tf-recopt tune`: configurations measured under a real server, the QPS
at the SLA picked from the points that met it, the winner written as TF
Serving's batching file and flags."""
import json
import os

import pytest

import tf_recopt
from tests.conftest import run_cli
from tf_recopt.serving import config, tune


def test_grid_crosses_threads_with_batching():
    configs = tune.grid("0:0,1:-1", "off,8:500", cores=2)
    assert [(c.intra, c.inter, c.max_batch_size, c.batch_timeout_micros) for c in configs] == [
        (0, 0, None, 0), (0, 0, 8, 500), (1, -1, None, 0), (1, -1, 8, 500)]
    assert configs[1].num_batch_threads == 2 and "--enable_batching" in configs[1].flags()
    assert "--enable_batching" not in configs[0].flags()


def test_qps_at_sla_only_counts_points_that_met_it_without_errors():
    points = [{"qps": 100, "p99_ms": 1.0, "errors": 0}, {"qps": 300, "p99_ms": 4.0, "errors": 0},
              {"qps": 250, "p99_ms": 2.5, "errors": 1}, {"qps": 200, "p99_ms": 2.9, "errors": 0}]
    assert tune.qps_at_sla(points, 3.0) == 200
    assert tune.qps_at_sla(points, 0.5) == 0


def test_tune_writes_the_measured_winner(ops, zoo_dir, tmp_path):
    out = tmp_path / "tuned"
    args = [zoo_dir("dlrm"), "--sla-ms", "2000", "--clients", "1,4", "--threads", "1:-1", "--batching", "off,4:0",
            "--seconds", "0.5", "--requests", "150", "--out", str(out)]
    assert tune.main(args) == 0
    summary = json.loads((out / "tune.json").read_text())
    assert len(summary["results"]) == 2 and all(r["points"] for r in summary["results"])
    best = max(summary["results"], key=lambda r: r["qps_at_sla"])
    assert summary["best"] == best["config"] and best["qps_at_sla"] > 0
    flags = (out / "flags.txt").read_text()
    assert "--tensorflow_intra_op_parallelism=1 --tensorflow_inter_op_parallelism=-1" in flags
    assert flags.count("--model_base_path=BASE") == 2  # tensorflow_model_server and tf-recopt serve
    if best["params"]["max_batch_size"] is not None:
        params = config.read_batching_parameters(str(out / "batching_parameters.txt"))
        assert params.max_batch_size == 4 and params.batch_timeout_micros == 0
        assert "--enable_batching" in flags
    else:
        assert not (out / "batching_parameters.txt").exists() and "--enable_batching" not in flags
    assert os.path.getsize(out / "tune.png") > 0


def test_unreachable_sla_is_an_error_naming_the_best_p99(ops, zoo_dir, tmp_path):
    # From the command line, on an optimized model: the tuning process itself
    # must load the op library to build its requests.
    optimized = str(tmp_path / "opt")
    tf_recopt.optimize(zoo_dir("dlrm"), optimized)
    result = run_cli("tune", optimized, "--sla-ms", "0.001", "--clients", "1", "--threads", "1:-1", "--batching",
                     "off", "--seconds", "0.3", "--requests", "50", "--out", str(tmp_path / "t"))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "no configuration met p99 <= 0.001 ms" in result.stderr and "lowest p99 was" in result.stderr
    assert not (tmp_path / "t" / "flags.txt").exists() and (tmp_path / "t" / "tune.json").exists()


def test_not_a_saved_model_is_refused(tmp_path):
    with pytest.raises(tune.TuneError, match="no saved_model.pb"):
        tune.main([str(tmp_path), "--sla-ms", "5"])
