"""The pattern matcher: alternatives, commutative inputs, Identity look-through,
diamonds, and the safe-to-fuse rule."""
import tensorflow as tf

from grappler_passes.graph_view import GraphView
from grappler_passes.pattern import P, match, safe_to_fuse
from tests.graph_util import frozen_graph

SPEC = tf.TensorSpec([None, 4], tf.float32)


def _view(fn, protected=()):
    graph_def, inputs, outputs = frozen_graph(fn, SPEC)
    return GraphView(graph_def, protected or {n.split(":")[0] for n in inputs + outputs}), outputs


def _node(view, op):
    return next(n for n in view.nodes() if n.op == op)


def test_commutative_add_matches_bias_on_either_side():
    bias = P("Const", "b")
    pattern = P("AddV2", "add", [P("MatMul", "mm"), bias])
    w = tf.ones([4, 3])
    for fn in (lambda x: tf.matmul(x, w) + tf.ones([3]), lambda x: tf.ones([3]) + tf.matmul(x, w)):
        view, _ = _view(fn)
        m = match(pattern, _node(view, "AddV2"), view)
        assert m is not None and m["mm"].op == "MatMul" and m["b"].op == "Const"


def test_non_commutative_op_does_not_swap():
    pattern = P("Sub", "sub", [P("MatMul"), P("Const")])
    view, _ = _view(lambda x: tf.ones([3]) - tf.matmul(x, tf.ones([4, 3])))
    assert match(pattern, _node(view, "Sub"), view) is None


def test_identity_between_ops_is_looked_through():
    pattern = P("Relu", "act", [P("MatMul", "mm")])
    view, _ = _view(lambda x: tf.nn.relu(tf.identity(tf.identity(tf.matmul(x, tf.ones([4, 4]))))))
    assert match(pattern, _node(view, "Relu"), view) is not None


def test_diamond_label_must_bind_one_node():
    # swish: x * sigmoid(x), both inputs the same tensor
    inner = P("MatMul", "x")
    pattern = P("Mul", "mul", [inner, P("Sigmoid", "sig", [inner])])
    w = tf.ones([4, 4])
    view, _ = _view(lambda x: tf.matmul(x, w) * tf.sigmoid(tf.matmul(x, w)))
    assert match(pattern, _node(view, "Mul"), view) is None  # two distinct MatMuls
    view, _ = _view(lambda x: (lambda h: h * tf.sigmoid(h))(tf.matmul(x, w)))
    assert match(pattern, _node(view, "Mul"), view) is not None


def test_alternatives_and_predicates():
    pattern = P("Relu|Relu6", "act", [P("MatMul", pred=lambda n, v: not n.attr["transpose_b"].b)])
    view, _ = _view(lambda x: tf.nn.relu6(tf.matmul(x, tf.ones([4, 4]))))
    assert match(pattern, _node(view, "Relu6"), view) is not None
    view, _ = _view(lambda x: tf.nn.relu6(tf.matmul(x, tf.ones([4, 4]), transpose_b=True)))
    assert match(pattern, _node(view, "Relu6"), view) is None


def test_safe_to_fuse_refuses_shared_intermediate():
    pattern = P("Relu", "act", [P("MatMul", "mm")])
    view, _ = _view(lambda x: (lambda h: (tf.nn.relu(h), h * 2.0))(tf.matmul(x, tf.ones([4, 4]))))
    m = match(pattern, _node(view, "Relu"), view)
    assert m is not None
    assert "also used by" in safe_to_fuse(m, view)


def test_safe_to_fuse_refuses_signature_node():
    pattern = P("Relu", "act", [P("MatMul", "mm")])
    view, outputs = _view(lambda x: (lambda h: (tf.nn.relu(h), h))(tf.matmul(x, tf.ones([4, 4]))))
    mm = _node(view, "MatMul")
    view.protected.add(mm.name)
    m = match(pattern, _node(view, "Relu"), view)
    assert "signature" in safe_to_fuse(m, view)
