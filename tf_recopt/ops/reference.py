"""Pure-TensorFlow references for every custom op: same inputs, same outputs.
Tests use them as oracles; they also document each op's exact semantics."""
import tensorflow as tf

_ACTIVATIONS = {
    "linear": lambda x, a: x,
    "relu": lambda x, a: tf.nn.relu(x),
    "relu6": lambda x, a: tf.nn.relu6(x),
    "leaky_relu": lambda x, a: tf.nn.leaky_relu(x, alpha=a),
    "elu": lambda x, a: tf.nn.elu(x),
    "selu": lambda x, a: tf.nn.selu(x),
    "sigmoid": lambda x, a: tf.math.sigmoid(x),
    "tanh": lambda x, a: tf.math.tanh(x),
    "softplus": lambda x, a: tf.math.softplus(x),
    "swish": lambda x, a: x * tf.math.sigmoid(x),
    "gelu": lambda x, a: tf.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x, a: tf.nn.gelu(x, approximate=True),
}
ACTIVATION_NAMES = tuple(_ACTIVATIONS)


def fused_mlp(x, weights, biases, activations, alphas, weights_bf16=False):
    """Recopt>FusedMLP: act_l(h @ W_l + b_l) over the last axis, layer by layer.
    weights_bf16: weights rounded to bfloat16 (nearest even), all else fp32."""
    h = x
    for w, b, act, alpha in zip(weights, biases, activations, alphas):
        if weights_bf16:
            w = tf.cast(tf.cast(w, tf.bfloat16), tf.float32)
        h = _ACTIVATIONS[act](tf.tensordot(h, w, axes=1) + b, alpha)
    return h
