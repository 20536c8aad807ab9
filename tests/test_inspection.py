"""tf_recopt.inspect() and tf_recopt.validate(): the public API the CLI's
inspect and validate print."""
import os

import pytest

import tf_recopt


def test_inspect_reports_each_pass_and_writes_nothing(zoo_dir, ops):
    src = zoo_dir("dlrm")
    before = sorted(os.listdir(src))
    info = tf_recopt.inspect(src)
    sig = info["signatures"]["serving_default"]
    passes = {p["pass"]: p for p in sig["passes"]}
    assert passes["fuse_dense"]["would_apply"] == 2 and passes["fuse_embedding"]["would_apply"] >= 1
    assert sig["nodes"]["after"] < sig["nodes"]["before"] and sig["ops"]["MatMul"] >= 2
    assert all(p["error"] == "" for p in sig["passes"])
    assert sorted(os.listdir(src)) == before and not os.path.exists(src + "_recopt")
    stock = tf_recopt.inspect(src, custom_ops=False)
    assert "fuse_dense" not in {p["pass"] for p in stock["signatures"]["serving_default"]["passes"]}


def test_inspect_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(tf_recopt.SavedModelError):
        tf_recopt.inspect(str(tmp_path))
    with pytest.raises(ValueError, match="no_such_pass"):
        tf_recopt.inspect(str(tmp_path), passes=["no_such_pass"])


def test_validate_compares_every_output(zoo_dir, tmp_path, ops):
    src, out = zoo_dir("dlrm"), str(tmp_path / "out")
    tf_recopt.optimize(src, out)
    result = tf_recopt.validate(src, out)
    assert result.ok and result.missing == []
    assert [p.output for p in result.signatures["serving_default"]] and \
        all(p.ok for p in result.signatures["serving_default"])
    other = tf_recopt.validate(src, zoo_dir("dcn"))
    assert not other.ok
