"""ctypes bindings of librecopt_gpu_core.so over PyTorch CUDA tensors.

The GPU kernel core is TensorFlow-free, so on a GPU machine without a CUDA
build of TensorFlow it is tested and benchmarked from PyTorch: tensors are
passed by data_ptr() and every call runs on PyTorch's current stream.
Build the library first: `python -m custom_ops.cuda_build core <dir>`.
"""
import ctypes
import pathlib

STORAGE = {"fp32": 0, "fp16": 1, "bf16": 2, "int8": 3}
GEMM = {"fp32": 0, "fp16": 1, "bf16": 2}
_ERR_LEN = 512
_P = ctypes.c_void_p
_I64 = ctypes.c_int64
_SIG = {
    "recopt_topk_workspace": (ctypes.c_size_t, [_I64, _I64, ctypes.c_int]),
    "recopt_topk": (ctypes.c_int, [_P, _I64, _I64, ctypes.c_int, _P, _P, _P, ctypes.c_size_t, _P, _P, ctypes.c_int]),
    "recopt_score_topk_workspace": (ctypes.c_size_t, [_I64, _I64, ctypes.c_int]),
    "recopt_score_topk": (ctypes.c_int, [_P, _I64, ctypes.c_int, _P, ctypes.c_int, _I64, _P, _P, ctypes.c_float,
                                         ctypes.c_int, _P, _P, _P, ctypes.c_size_t, _P, _P, ctypes.c_int]),
    "recopt_mlp_workspace": (ctypes.c_size_t, [_I64, _P, ctypes.c_int, ctypes.c_int]),
    "recopt_mlp": (ctypes.c_int, [_P, _P, _I64, _P, _P, _P, _P, _P, ctypes.c_int, ctypes.c_int, _P, _P,
                                  ctypes.c_size_t, _P, _P, ctypes.c_int]),
    "recopt_int8_gemm_nt": (ctypes.c_int, [_P, _P, _P, _P, _I64, _I64, _I64, _P, ctypes.c_size_t, _P, _P,
                                           ctypes.c_int]),
    "recopt_blas_create": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.POINTER(_P), _P, ctypes.c_int]),
    "recopt_blas_destroy": (None, [_P, _P]),
}


class GpuCoreError(RuntimeError):
    pass


class GpuCore:
    """One loaded core library; methods mirror custom_ops/gpu/gpu_core.h."""

    def __init__(self, lib_path):
        import torch  # only the harness needs it
        self.torch = torch
        self.lib = ctypes.CDLL(str(pathlib.Path(lib_path).resolve()))
        for name, (res, args) in _SIG.items():
            fn = getattr(self.lib, name)
            fn.restype, fn.argtypes = res, args
        self._blas = None

    # -- helpers -------------------------------------------------------
    def _stream(self):
        return ctypes.c_void_p(self.torch.cuda.current_stream().cuda_stream)

    def _workspace(self, nbytes):
        return self.torch.empty(max(int(nbytes), 1), dtype=self.torch.uint8, device="cuda")

    @staticmethod
    def _ptr(t):
        return ctypes.c_void_p(t.data_ptr()) if t is not None else None

    @staticmethod
    def _check(rc, err, what):
        if rc != 0:
            raise GpuCoreError(f"{what}: {err.value.decode()}")

    def blas(self):
        if self._blas is None:
            h, lt = _P(), _P()
            err = ctypes.create_string_buffer(_ERR_LEN)
            self._check(self.lib.recopt_blas_create(ctypes.byref(h), ctypes.byref(lt), err, _ERR_LEN), err, "blas")
            self._blas = (h, lt)
        return self._blas

    def close(self):
        if self._blas is not None:
            self.lib.recopt_blas_destroy(*self._blas)
            self._blas = None

    # -- ops -----------------------------------------------------------
    def topk(self, x, k):
        """x: contiguous float32 CUDA [rows, n] -> (values, int32 indices) [rows, k]."""
        torch = self.torch
        rows, n = x.shape
        values = torch.empty((rows, k), dtype=torch.float32, device=x.device)
        indices = torch.empty((rows, k), dtype=torch.int32, device=x.device)
        ws = self._workspace(self.lib.recopt_topk_workspace(rows, n, k))
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self.lib.recopt_topk(self._ptr(x), rows, n, k, self._ptr(values), self._ptr(indices), self._ptr(ws),
                                  ws.numel(), self._stream(), err, _ERR_LEN)
        self._check(rc, err, "topk")
        return values, indices

    def score_topk(self, queries, candidates, k, storage="fp32", row_scales=None, bias=None, scale=1.0):
        """queries [b, d] float32, candidates [n, d] in `storage` -> top-k scores and ids."""
        torch = self.torch
        b, d = queries.shape
        n = candidates.shape[0]
        values = torch.empty((b, k), dtype=torch.float32, device=queries.device)
        indices = torch.empty((b, k), dtype=torch.int32, device=queries.device)
        ws = self._workspace(self.lib.recopt_score_topk_workspace(b, n, k))
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self.lib.recopt_score_topk(self._ptr(queries), b, d, self._ptr(candidates), STORAGE[storage], n,
                                        self._ptr(row_scales), self._ptr(bias), scale, k, self._ptr(values),
                                        self._ptr(indices), self._ptr(ws), ws.numel(), self._stream(), err, _ERR_LEN)
        self._check(rc, err, "score_topk")
        return values, indices

    def mlp(self, x, weights, biases, activations, precision="fp32", alphas=None):
        """x [rows, in]; weights[l] [in_l, out_l]; activations: ints (core/activation.h)."""
        torch = self.torch
        L = len(weights)
        dims = (ctypes.c_int * (L + 1))(*([weights[0].shape[0]] + [w.shape[1] for w in weights]))
        acts = (ctypes.c_int * L)(*activations)
        alph = (ctypes.c_float * L)(*(alphas or [0.0] * L))
        wp = (_P * L)(*[w.data_ptr() for w in weights])
        bp = (_P * L)(*[b.data_ptr() for b in biases])
        y = torch.empty((x.shape[0], dims[L]), dtype=torch.float32, device=x.device)
        ws = self._workspace(self.lib.recopt_mlp_workspace(x.shape[0], dims, L, GEMM[precision]))
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self.lib.recopt_mlp(self.blas()[0], self._ptr(x), x.shape[0], wp, bp, dims, acts, alph, L,
                                 GEMM[precision], self._ptr(y), self._ptr(ws), ws.numel(), self._stream(), err,
                                 _ERR_LEN)
        self._check(rc, err, "mlp")
        return y

    def int8_gemm_nt(self, a, b):
        """int32 a[m, k] @ b[n, k]^T for int8 CUDA tensors."""
        torch = self.torch
        c = torch.empty((a.shape[0], b.shape[0]), dtype=torch.int32, device=a.device)
        ws = self._workspace(32 << 20)
        err = ctypes.create_string_buffer(_ERR_LEN)
        rc = self.lib.recopt_int8_gemm_nt(self.blas()[1], self._ptr(a), self._ptr(b), self._ptr(c), a.shape[0],
                                          b.shape[0], a.shape[1], self._ptr(ws), ws.numel(), self._stream(), err,
                                          _ERR_LEN)
        self._check(rc, err, "int8_gemm_nt")
        return c


def encode(c, storage):
    """float32 CUDA candidates [n, d] -> (stored, row_scales or None, what the
    kernel effectively scores: the dequantised fp32 matrix). int8 is symmetric
    per row, as tf_recopt.ops.retrieval encodes it for the CPU kernel."""
    import torch
    if storage == "fp16":
        return c.half(), None, c.half().float()
    if storage == "bf16":
        return c.bfloat16(), None, c.bfloat16().float()
    if storage == "int8":
        scales = c.abs().amax(dim=1).clamp_min(1e-12) / 127.0
        q = (c / scales[:, None]).round().clamp(-127, 127).to(torch.int8)
        return q, scales, q.float() * scales[:, None]
    return c, None, c
