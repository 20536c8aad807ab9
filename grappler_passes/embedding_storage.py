"""How the fused embedding op stores each table: as the graph has it, or,
under optimize(precision="bf16") a bfloat16 copy, under "int8" an 8-bit
row-wise one (FBGEMM's format: uint8 codes, then an fp32 scale and bias per
row; tf_recopt.ops.embedding.encode_rowwise_uint8).

Lookups read rows at random from tables far larger than the caches, so
they are bound by memory traffic: bfloat16 rows halve it, 8-bit rows cut it
to a quarter (plus 8 bytes a row). A frozen table becomes a Const in the
new storage; a variable table gets a variable, made once per optimize()
call (ctx.derived) however many signatures and lookups read it, and
captured by the saved model in its place (the original leaves the model
when nothing else reads it). The op widens rows to float32 in registers
and accumulates in float32. A table holding NaN or Inf stays float32 under
"int8" (8-bit codes cannot hold them).
"""
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from grappler_passes.shapes import dtype_of


# Bytes after a uint8 row-wise row's codes: its fp32 scale, then fp32 bias.
ROWWISE_EXTRA = 8


def encode_rowwise_uint8(table):
    """A float table [rows, dim] in FBGEMM's fused 8-bit row-wise format
    (core/embedding.h): uint8 [rows, dim + 8], each row's codes
    q = rint((x - min) / scale) with scale = (max - min) / 255 (1 for a
    constant row) and bias = min, then scale and bias as fp32 bytes. Every
    value comes back within scale / 2. ValueError for a NaN or Inf."""
    x = np.asarray(table, np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"a row-wise uint8 table needs a [rows, dim] float matrix, got shape {list(x.shape)}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"row {int(np.argmin(finite))} holds a NaN or Inf, which 8-bit codes cannot hold")
    lo = x.min(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    hi = x.max(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint((x - lo[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    extra = np.stack([scale, lo.astype(np.float32)], axis=1).view(np.uint8).reshape(-1, ROWWISE_EXTRA)
    return np.concatenate([codes, extra], axis=1)


def decode_rowwise_uint8(packed):
    """The fp32 values the op reads from a row-wise uint8 table: each
    fma(code, scale, bias), rounded once (float64 holds code * scale exactly)."""
    packed = np.asarray(packed, np.uint8)
    codes = packed[:, :-ROWWISE_EXTRA].astype(np.float64)
    sb = np.ascontiguousarray(packed[:, -ROWWISE_EXTRA:]).view(np.float32).astype(np.float64)
    return (codes * sb[:, :1] + sb[:, 1:]).astype(np.float32)


# Storage -> (suffix of the copy, its dtype, how a float32 value becomes it).
_STORAGES = {
    "bf16": ("recopt_bf16", types_pb2.DT_BFLOAT16, lambda v: tf.cast(v, tf.bfloat16).numpy()),
    "int8": ("recopt_rowwise8", types_pb2.DT_UINT8, encode_rowwise_uint8),
}


class TableStorage:
    def __init__(self, ctx):
        self.ctx, self.view = ctx, ctx.view
        self.storage = _STORAGES.get(ctx.precision("embedding"))
        self._copies = {}  # table tensor -> its stand-in in this graph

    def input_for(self, tensor, info):
        """(tensor, dtype enum) the fused op reads for table input `tensor`."""
        dtype = dtype_of(info, tensor)
        if self.storage is None or dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_RESOURCE):
            return tensor, dtype
        if tensor not in self._copies:
            self._copies[tensor] = self._copy(tensor, dtype)
        return self._copies[tensor]

    def _copy(self, tensor, dtype):
        suffix, new_dtype, encode = self.storage
        name = self.view.skip_identity(tensor).split(":")[0]
        if dtype == types_pb2.DT_FLOAT:
            value = self.view.const_value(tensor)
            if value is None or value.ndim != 2:
                return tensor, dtype
            try:
                const = self.view.add_const(f"{name}/{suffix}", encode(value))
            except ValueError:  # NaN / Inf rows: the table keeps float32
                return tensor, dtype
            return const.name, new_dtype
        variable = self.ctx.variables.get(name)
        if variable is None or variable.dtype != tf.float32 or variable.shape.rank != 2:
            return tensor, dtype
        key = (suffix, id(variable))
        if key not in self.ctx.derived:
            try:
                encoded = encode(variable.numpy())
            except ValueError:
                return tensor, dtype
            self.ctx.derived[key] = tf.Variable(encoded, trainable=False,
                                                name=variable.name.split(":")[0] + "_" + suffix)
        return self.ctx.add_variable_handle(f"{name}/{suffix}", self.ctx.derived[key]), types_pb2.DT_RESOURCE
