"""Recopt>FusedMLP's attrs (custom_ops/ops/fused_mlp_op.cc): one activation
name and alpha per layer, bf16 weight storage, and the layers that multiply
in int8."""
from custom_ops.spec import FUSED_MLP

OP_NAME = FUSED_MLP


def op_attrs(activations, alphas, weights_bf16, int8_layers=()):
    """The attrs of a FusedMLP node as Python values (grappler_passes.attrs
    builds the AttrValues); int8_layers only when there are some, so fp32
    graphs stay as before."""
    attrs = {
        "num_layers": len(activations),
        "activations": [a if isinstance(a, bytes) else a.encode() for a in activations],
        "alphas": [float(a) for a in alphas],
        "weights_bf16": bool(weights_bf16),
    }
    if int8_layers:
        attrs["int8_layers"] = [int(i) for i in int8_layers]
    return attrs
