"""`make corpus` in small: six DeepCTR 0.9.4 models exported as users
export them (tf_keras), tables redrawn away from DeepCTR's 1e-4 init,
then optimize() in a fresh process: parity, fused ops, no pass dropped.
The packages are pip-installed (--no-deps) into build/corpus on first use."""
import pytest

from bench import corpus

FUSED = {"WDL": ("Recopt>FusedEmbeddingLookup", "Recopt>FusedMLP"),
         "DeepFM": ("Recopt>FusedEmbeddingLookup", "Recopt>FusedMLP"),
         "DCN": ("Recopt>FusedEmbeddingLookup", "Recopt>FusedMLP"),
         "AFM": ("Recopt>FusedEmbeddingLookup", "Recopt>AfmPooling"),
         "xDeepFM": ("Recopt>FusedEmbeddingLookup", "Recopt>FusedMLP"),
         "DCNMix": ("Recopt>FusedEmbeddingLookup", "Recopt>FusedMLP")}
# Rewrites a model must get from a pass whose op is shared with others.
REWRITES = {"xDeepFM": {"fuse_cin": 2}}   # its CIN's two layers
# ... or at least: DCNMix's 24 projections (2 layers, 4 experts, U/V/C) and
# its 2 mixtures, then the ExpandDims moved down after them.
AT_LEAST = {"DCNMix": {"column_vectors": 26}}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    corpus.install()
    return tmp_path_factory.mktemp("corpus")


@pytest.mark.parametrize("name", sorted(FUSED))
def test_deepctr_model_optimizes_with_parity(workdir, name):
    src, dst = str(workdir / name), str(workdir / (name + "_recopt"))
    assert corpus.export(name, src) is None
    result = corpus.optimize(src, dst)
    assert result["ok"], result
    assert result["dropped"] == {}, result["dropped"]
    for op in FUSED[name]:
        assert result["fused"].get(op, 0) >= 1, result["fused"]
    assert result["nodes"][1] < result["nodes"][0]
    for pass_name, count in REWRITES.get(name, {}).items():
        assert result["rewrites"].get(pass_name) == count, result["rewrites"]
    for pass_name, count in AT_LEAST.get(name, {}).items():
        assert result["rewrites"].get(pass_name, 0) >= count, result["rewrites"]
