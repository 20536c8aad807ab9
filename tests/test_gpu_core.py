"""The GPU kernel core against PyTorch on a real GPU (skipped without one).

Runs where `torch.cuda.is_available()` and nvcc are present: the device
machine, never CI. Builds librecopt_gpu_core.so with custom_ops.cuda_build
and compares with torch.topk / torch.matmul: values exactly (TopK) or to fp32
rounding (scores), ids exactly where values are distinct, and as sets with
TopKV2's tie order where they are not.
"""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from custom_ops import cuda_build  # noqa: E402
from custom_ops.gpu_harness import GpuCore, GpuCoreError, encode  # noqa: E402

if cuda_build.find_nvcc() is None:
    pytest.skip("nvcc not found", allow_module_level=True)


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    lib = cuda_build.build_core(tmp_path_factory.mktemp("gpu_core"))
    c = GpuCore(lib)
    yield c
    c.close()


def reference_topk(x, k):
    """TopKV2's order on the host: value descending, then index ascending (NaN first)."""
    x = x.detach().cpu().double().numpy()
    key = np.where(np.isnan(x), np.inf, x)
    nan_first = np.isnan(x)
    out_v, out_i = [], []
    for r in range(x.shape[0]):
        order = np.lexsort((np.arange(x.shape[1]), -key[r], ~nan_first[r]))[:k]
        out_i.append(order)
        out_v.append(x[r, order])
    return np.array(out_v, dtype=np.float32).reshape(x.shape[0], k), np.array(out_i).reshape(x.shape[0], k)


@pytest.mark.parametrize("rows,n,k", [(1, 1_000_000, 500), (8, 1_000_000, 1000), (1, 10_000_000, 1000),
                                      (8, 10_000_000, 500), (3, 5000, 17), (2, 100, 100), (1, 1, 1), (4, 4097, 4096)])
def test_topk_matches_tie_ordered_reference(core, rows, n, k):
    g = torch.Generator(device="cuda").manual_seed(rows * 7 + k)
    x = torch.randn((rows, n), device="cuda", generator=g)
    v, i = core.topk(x, k)
    rv, ri = reference_topk(x, k)
    np.testing.assert_array_equal(v.cpu().numpy(), rv)
    np.testing.assert_array_equal(i.cpu().numpy(), ri)
    tv, _ = torch.topk(x, k)
    np.testing.assert_array_equal(v.cpu().numpy(), tv.cpu().numpy())


@pytest.mark.parametrize("pattern", ["equal", "ascending", "descending", "few_values", "nan", "neg_zero", "inf"])
def test_topk_adversarial_rows(core, pattern):
    n, k = 300_000, 1000
    base = torch.arange(n, device="cuda", dtype=torch.float32)
    x = {"equal": torch.full((2, n), 3.0, device="cuda"),
         "ascending": base.repeat(2, 1),
         "descending": (-base).repeat(2, 1),
         "few_values": (base % 3).repeat(2, 1),
         "nan": torch.where(base % 1000 == 0, torch.tensor(float("nan"), device="cuda"), base).repeat(2, 1),
         "neg_zero": torch.where(base % 2 == 0, torch.tensor(-0.0, device="cuda"),
                                 torch.tensor(0.0, device="cuda")).repeat(2, 1),
         "inf": torch.where(base % 7 == 0, torch.tensor(float("inf"), device="cuda"), -base).repeat(2, 1)}[pattern]
    v, i = core.topk(x.contiguous(), k)
    rv, ri = reference_topk(x, k)
    np.testing.assert_array_equal(np.isnan(v.cpu().numpy()), np.isnan(rv))
    np.testing.assert_array_equal(i.cpu().numpy(), ri)


def test_topk_errors_and_empty(core):
    x = torch.randn((2, 10), device="cuda")
    with pytest.raises(GpuCoreError, match="k must be in"):
        core.topk(x, 11)
    with pytest.raises(GpuCoreError, match="GPU limit"):
        core.topk(torch.randn((1, 10000), device="cuda"), 5000)
    v, i = core.topk(x, 0)
    assert v.shape == (2, 0) and i.shape == (2, 0)
    v, i = core.topk(torch.empty((0, 10), device="cuda"), 3)
    assert v.shape == (0, 3)


@pytest.mark.parametrize("storage", ["fp32", "fp16", "bf16", "int8"])
@pytest.mark.parametrize("batch,n,d,k", [(1, 1_000_000, 64, 500), (8, 1_000_000, 64, 1000), (3, 20_000, 40, 10),
                                         (9, 50_000, 130, 64), (1, 1000, 64, 1000)])
def test_score_topk_matches_matmul_topk(core, storage, batch, n, d, k):
    g = torch.Generator(device="cuda").manual_seed(n + d)
    q = torch.randn((batch, d), device="cuda", generator=g)
    c = torch.randn((n, d), device="cuda", generator=g)
    bias = torch.randn((n,), device="cuda", generator=g) * 0.1
    cand, scales, dequant = encode(c, storage)
    v, i = core.score_topk(q, cand, k, storage=storage, row_scales=scales, bias=bias, scale=0.5)
    scores = (q.double() @ dequant.double().T) * 0.5 + bias.double()
    ref_v, ref_i = torch.topk(scores, k)
    np.testing.assert_allclose(v.cpu().numpy(), ref_v.float().cpu().numpy(), rtol=1e-4, atol=1e-4)
    # Ids: the returned ones must score (in float64) within rounding of the k-th best.
    got = torch.gather(scores, 1, i.long())
    assert torch.all(got >= ref_v[:, -1:] - 1e-4).item()
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(i.cpu().numpy(), ref_i.cpu().numpy())])
    assert recall > 0.999


def sample_positions(n, s=4096):
    """custom_ops/gpu/select.cuh SamplePos: the elements the threshold sees."""
    s = min(n, s)
    r = np.arange(s, dtype=np.int64)
    stride = n // s
    base = r * n // s
    if stride <= 1:
        return base
    h = (r * 2654435761) % (1 << 32)
    return base + h % stride


def hidden_winners(n, count):
    """A mask of `count` elements none of which is sampled: the sample then
    puts the threshold far too low and the survivor buffer overflows."""
    mask = np.ones(n, bool)
    mask[sample_positions(n)] = False
    mask[np.flatnonzero(mask)[count:]] = False
    return mask


def test_topk_overflow_takes_the_full_row_path(core):
    n, k = 300_000, 1000
    mask = hidden_winners(n, 50_000)  # far above the survivor buffer (~8k)
    x = torch.zeros((2, n), device="cuda")
    x[:, torch.from_numpy(mask).cuda()] = 1.0
    v, i = core.topk(x, k)
    np.testing.assert_array_equal(i.cpu().numpy(), np.tile(np.flatnonzero(mask)[:k], (2, 1)))
    assert torch.all(v == 1.0).item()


def test_score_topk_ties_and_overflow_are_exact(core):
    n, d, k = 200_000, 64, 1000
    q = torch.ones((2, d), device="cuda")
    c = torch.zeros((n, d), device="cuda")
    v, i = core.score_topk(q, c, k)  # all scores equal: ties by index, no overflow
    np.testing.assert_array_equal(i.cpu().numpy(), np.tile(np.arange(k), (2, 1)))
    mask = hidden_winners(n, 50_000)
    bias = torch.from_numpy(mask.astype(np.float32)).cuda()
    v, i = core.score_topk(q, c, k, bias=bias)  # the rescoring path
    np.testing.assert_array_equal(i.cpu().numpy(), np.tile(np.flatnonzero(mask)[:k], (2, 1)))
    assert torch.all(v == 1.0).item()


def test_score_topk_errors(core):
    q = torch.randn((1, 8), device="cuda")
    with pytest.raises(GpuCoreError, match="row_scales"):
        core.score_topk(q, torch.zeros((10, 8), dtype=torch.int8, device="cuda"), 3, storage="int8")
    with pytest.raises(GpuCoreError, match="k must be in"):
        core.score_topk(q, torch.zeros((10, 8), device="cuda"), 11)


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("fp16", 3e-3), ("bf16", 2e-2)])
@pytest.mark.parametrize("rows", [1, 64, 512])
def test_mlp_matches_torch(core, precision, tol, rows):
    g = torch.Generator(device="cuda").manual_seed(rows)
    dims = [256, 512, 256, 1]
    ws = [torch.randn((a, b), device="cuda", generator=g) / a ** 0.5 for a, b in zip(dims, dims[1:])]
    bs = [torch.randn((b,), device="cuda", generator=g) * 0.1 for b in dims[1:]]
    x = torch.randn((rows, dims[0]), device="cuda", generator=g)
    acts = [1, 9, 6]  # relu, swish, sigmoid (custom_ops/core/activation.h)
    y = core.mlp(x, ws, bs, acts, precision=precision)
    h = x.double()
    for w, b, a in zip(ws, bs, acts):
        h = h @ w.double() + b.double()
        h = torch.relu(h) if a == 1 else (h * torch.sigmoid(h) if a == 9 else torch.sigmoid(h))
    np.testing.assert_allclose(y.cpu().numpy(), h.float().cpu().numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("m,n,k", [(8, 1_000_000, 64), (64, 4096, 128), (1, 17, 4)])
def test_int8_gemm_matches_exact_integer_product(core, m, n, k):
    g = torch.Generator(device="cuda").manual_seed(m + n)
    a = torch.randint(-127, 128, (m, k), device="cuda", dtype=torch.int8, generator=g)
    b = torch.randint(-127, 128, (n, k), device="cuda", dtype=torch.int8, generator=g)
    c = core.int8_gemm_nt(a, b)
    ref = a.long() @ b.long().T
    assert torch.equal(c.long(), ref)
    with pytest.raises(GpuCoreError, match="k % 4"):
        core.int8_gemm_nt(a[:, :3].contiguous(), b[:, :3].contiguous())
