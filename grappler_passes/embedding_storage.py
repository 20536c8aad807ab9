"""How the fused embedding op stores each table: as the graph has it, or,
under optimize(precision="bf16"), as a bfloat16 copy.

Lookups read rows at random from tables far larger than the caches, so
they are bound by memory traffic: bfloat16 rows halve it. A frozen table
becomes a bfloat16 Const; a variable table gets a bfloat16 variable,
made once per optimize() call (ctx.derived) however many signatures and
lookups read it, and captured by the saved model in its place (the
original leaves the model when nothing else reads it). The op widens rows
to float32 and accumulates in float32.
"""
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from grappler_passes.shapes import dtype_of


class TableStorage:
    def __init__(self, ctx):
        self.ctx, self.view = ctx, ctx.view
        self.bf16 = ctx.precision("embedding") == "bf16"
        self._copies = {}  # table tensor -> its bfloat16 stand-in in this graph

    def input_for(self, tensor, info):
        """(tensor, dtype enum) the fused op reads for table input `tensor`."""
        dtype = dtype_of(info, tensor)
        if not self.bf16 or dtype not in (types_pb2.DT_FLOAT, types_pb2.DT_RESOURCE):
            return tensor, dtype
        if tensor not in self._copies:
            self._copies[tensor] = self._bf16_copy(tensor, dtype)
        return self._copies[tensor]

    def _bf16_copy(self, tensor, dtype):
        name = self.view.skip_identity(tensor).split(":")[0]
        if dtype == types_pb2.DT_FLOAT:
            value = self.view.const_value(tensor)
            if value is None:
                return tensor, dtype
            const = self.view.add_const(f"{name}/recopt_bf16", tf.cast(value, tf.bfloat16).numpy())
            return const.name, types_pb2.DT_BFLOAT16
        variable = self.ctx.variables.get(name)
        if variable is None or variable.dtype != tf.float32:
            return tensor, dtype
        key = ("bf16", id(variable))
        if key not in self.ctx.derived:
            self.ctx.derived[key] = tf.Variable(tf.cast(variable, tf.bfloat16), trainable=False,
                                                name=variable.name.split(":")[0] + "_recopt_bf16")
        return self.ctx.add_variable_handle(f"{name}/recopt_bf16", self.ctx.derived[key]), types_pb2.DT_RESOURCE
