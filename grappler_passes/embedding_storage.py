"""How the fused embedding op stores each table: as the graph has it, or,
under optimize(precision="bf16") a bfloat16 copy, under "int8" an 8-bit
row-wise one (FBGEMM's format: uint8 codes, then an fp32 scale and bias per
row; custom_ops.spec.embedding.encode_rowwise_uint8).

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
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from custom_ops.spec.embedding import encode_rowwise_uint8
from grappler_passes.shapes import dtype_of


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
