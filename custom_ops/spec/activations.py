"""The activations FusedMLP, DinAttention and MultiHeadAttention take by
name (core/activation.h), each as the TensorFlow expression it equals: the
oracle (tf_recopt.ops.reference) and the matcher that recognises an
activation by its values (grappler_passes.activation_match) share it."""
import tensorflow as tf

ACTIVATIONS = {
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
ACTIVATION_NAMES = tuple(ACTIVATIONS)


def apply(name, x, alpha=0.0):
    """The activation `name` (alpha: leaky_relu's slope) of tensor x."""
    return ACTIVATIONS[name](x, alpha)
