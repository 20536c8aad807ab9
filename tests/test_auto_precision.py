"""precision="auto": every plain precision optimized and gated, the ones that
pass timed, the fastest written (a lower precision only when MIN_GAIN
faster), report.auto listing each; nothing left behind."""
import os

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tf_recopt import auto_precision
from tf_recopt.benchmark import Timing

RNG = np.random.default_rng(67)


def _save(path):
    ws = [tf.constant((RNG.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32))
          for k, n in ((64, 128), (128, 64), (64, 1))]

    class Mlp(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 64], tf.float32, name="x")])
        def serve(self, x):
            for w in ws[:-1]:
                x = tf.nn.relu(tf.matmul(x, w))
            return {"score": tf.sigmoid(tf.matmul(x, ws[-1]))}

    module = Mlp()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return str(path)


def _fake_bench(speed):
    """benchmark.bench stand-in: precision -> median ms (same at each batch)."""
    def bench(paths, batch_sizes, signature, warmup, repeats):
        assert signature == "serving_default" and all(os.path.isdir(p) for p in paths.values())
        return [Timing(p, b, speed[p], speed[p], b / speed[p], repeats) for p in paths for b in batch_sizes]
    return bench


@pytest.mark.parametrize("speed, chosen", [
    ({"fp32": 1.0, "bf16": 0.98, "int8": 0.9}, "int8"),    # int8 >= 3% ahead of fp32; bf16 is not
    ({"fp32": 1.0, "bf16": 0.9, "int8": 0.89}, "bf16"),    # int8 only 1% ahead of bf16
    ({"fp32": 1.0, "bf16": 0.99, "int8": 0.985}, "fp32"),  # nothing earns its accuracy cost
])
def test_the_fastest_that_earns_it_is_written(ops, tmp_path, monkeypatch, speed, chosen):
    monkeypatch.setattr(auto_precision.benchmark, "bench", _fake_bench(speed))
    src, out = _save(tmp_path / "m"), str(tmp_path / "opt")
    report = tf_recopt.optimize(src, out, precision="auto")
    assert [c["precision"] for c in report.auto] == ["fp32", "bf16", "int8"]
    assert all(c["ok"] for c in report.auto), report.auto
    assert [c["precision"] for c in report.auto if c["chosen"]] == [chosen]
    assert report.written and report.output_dir == out and report.precision["dense"] == chosen
    assert report.auto[2]["vs_fp32"] == pytest.approx(1.0 / speed["int8"])
    # Each gate's measured difference: fp32 tight, the reduced precisions looser but inside their tolerance.
    diffs = {c["precision"]: c["max_abs"] for c in report.auto}
    assert diffs["fp32"] < 1e-5 and 0 < diffs["bf16"] < 5e-3 and diffs["int8"] > diffs["fp32"], diffs
    mlps = [n for f in tf.saved_model.load(out).signatures["serving_default"].graph.as_graph_def().library.function
            for n in f.node_def if n.op == "Recopt>FusedMLP"]
    assert mlps and all(bool(list(n.attr["int8_layers"].list.i)) == (chosen == "int8") for n in mlps)
    assert all(bool(n.attr["weights_bf16"].b) == (chosen == "bf16") for n in mlps)
    assert f"auto: {chosen} " in str(report) and "<- chosen" in str(report)
    assert sorted(os.listdir(tmp_path)) == ["m", "opt"]   # no scratch left


def test_a_refused_precision_is_listed_with_its_reason(ops, tmp_path):
    """With fp32's tolerance demanded of every candidate, bf16 weights fail
    their gate; the real timing then decides between the others."""
    src, out = _save(tmp_path / "m"), str(tmp_path / "opt")
    report = tf_recopt.optimize(src, out, precision="auto", rtol=1e-6, atol=1e-7)
    bf16 = next(c for c in report.auto if c["precision"] == "bf16")
    assert not bf16["ok"] and "differs" in bf16["detail"] and not bf16["median_ms"]
    fp32 = next(c for c in report.auto if c["precision"] == "fp32")
    assert fp32["ok"] and set(fp32["median_ms"]) == set(auto_precision.AUTO_BATCHES) and fp32["vs_fp32"] == 1.0
    assert sum(c["chosen"] for c in report.auto) == 1 and os.path.isdir(out)


def test_bad_requests_write_nothing(ops, tmp_path):
    src = _save(tmp_path / "m")
    with pytest.raises(ValueError, match="validate=True"):
        tf_recopt.optimize(src, str(tmp_path / "opt"), precision="auto", validate=False)
    os.makedirs(tmp_path / "taken")
    with pytest.raises(FileExistsError):
        tf_recopt.optimize(src, str(tmp_path / "taken"), precision="auto")
    assert sorted(os.listdir(tmp_path)) == ["m", "taken"]
