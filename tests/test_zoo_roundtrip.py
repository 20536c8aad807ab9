"""Every zoo model optimizes with parity and reloads with the same answers
at several batch sizes (dynamic batch preserved)."""
import pytest
import tensorflow as tf

import tf_recopt
from tf_recopt import saved_model_io, verify
from tf_recopt.options import OptimizeOptions
from tests.conftest import assert_outputs_close

ZOO = ["dlrm", "wdl", "din", "dien", "dcn", "two_tower", "tfrs_retrieval", "tfrs_ranking"]
RETRIEVAL = {"two_tower", "tfrs_retrieval"}


@pytest.mark.parametrize("name", ZOO)
def test_zoo_model_round_trips(ops, zoo_dir, tmp_path, name):
    src = zoo_dir(name)
    out = str(tmp_path / "opt")
    report = tf_recopt.optimize(src, out)
    assert report.parity_ok and report.written
    assert report.rewrites()["fuse_dense"] >= 1, report
    ops_after = report.signatures["serving_default"].ops_after
    if name != "tfrs_retrieval":  # dense query features; its one ResourceGather reads the ids of the top k
        assert ops_after.get("Recopt>FusedEmbeddingLookup", 0) >= 1, ops_after
        assert "ResourceGather" not in ops_after, ops_after
    if name in RETRIEVAL:
        assert ops_after.get("Recopt>ScoreTopK") == 1 and "TopKV2" not in ops_after, ops_after
    assert "StringToHashBucketFast" not in ops_after
    if name == "dlrm":
        assert ops_after.get("Recopt>DotInteraction") == 1 and "BatchMatMulV2" not in ops_after, ops_after
    if name == "din":
        assert ops_after.get("Recopt>DinAttention") == 1 and "Tile" not in ops_after, ops_after
    if name == "dien":  # the interest GRU and the AUGRU, both masked; the AUGRU's scores
        assert ops_after.get("Recopt>GRU") == 2 and "While" not in ops_after, ops_after
        assert ops_after.get("Recopt>DinAttention") == 1 and "Softmax" not in ops_after, ops_after
    if name == "tfrs_ranking":  # five lookups behind StringLookup/IntegerLookup tables: one op
        assert ops_after.get("Recopt>FusedEmbeddingLookup") == 1 and "ConcatV2" not in ops_after, ops_after
        assert ops_after.get("LookupTableFindV2") == 5, ops_after
    original = saved_model_io.load(src, OptimizeOptions(freeze_max_bytes=0))
    optimized = tf.saved_model.load(out)
    for sig_name, sig in original.signatures.items():
        new_sig = optimized.signatures[sig_name]
        assert {k: (s.dtype, s.shape.as_list()) for k, s in new_sig.structured_input_signature[1].items()} == \
            {k: (s.dtype, s.shape.as_list()) for k, s in sig.input_specs.items()}
        for batch in (1, 33):
            feeds = verify.generate_inputs(sig, src, batch, seed=batch)
            assert_outputs_close(verify.run_signature(sig.function, feeds),
                                 verify.run_signature(new_sig, feeds), rtol=1e-4, atol=1e-5)


def test_dlrm_mlps_become_fused_ops(ops, zoo_dir, tmp_path):
    report = tf_recopt.optimize(zoo_dir("dlrm"), str(tmp_path / "opt"))
    sig = report.signatures["serving_default"]
    assert sig.ops_after.get("Recopt>FusedMLP") == 2  # bottom and top MLP, each one op
    assert "BiasAdd" not in sig.ops_after and "Relu" not in sig.ops_after
    assert sig.nodes_after < sig.nodes_before
