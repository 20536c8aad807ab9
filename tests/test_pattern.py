"""The pattern matcher: alternatives, commutative inputs, Identity look-through,
diamonds, the reasons a near miss fails, and the safe-to-fuse rule."""
import pytest
import tensorflow as tf

from grappler_passes.graph_view import GraphView
from grappler_passes.pass_base import SkipMatch
from grappler_passes.pattern import P, match, require, safe_to_fuse
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


def test_diamond_label_binds_a_tensor_not_a_node():
    # Unpack's two outputs come from one node but are different tensors.
    pattern = P("Mul", "mul", [P("Unpack", "u"), P("Unpack", "u")])
    view, _ = _view(lambda x: (lambda a, b: a * b)(*tf.unstack(tf.reshape(x, [-1, 2, 2]), axis=1)))
    assert match(pattern, _node(view, "Mul"), view) is None
    view, _ = _view(lambda x: (lambda a, b: a * a)(*tf.unstack(tf.reshape(x, [-1, 2, 2]), axis=1)))
    assert match(pattern, _node(view, "Mul"), view) is not None


def test_prebound_label_must_match():
    w = tf.ones([4, 4])
    view, _ = _view(lambda x: tf.nn.relu(tf.matmul(x, w)) + tf.matmul(x, w))
    relu = _node(view, "Relu")
    mm = view.skip_identity(relu.input[0])
    pattern = P("Relu", "act", [P("MatMul", "mm")])
    assert match(pattern, relu, view, bound={"mm": mm}) is not None
    other = next(n.name for n in view.nodes() if n.op == "MatMul" and n.name != mm)
    assert match(pattern, relu, view, bound={"mm": other}) is None


def test_require_reports_the_furthest_failure():
    """Each reason names the node at fault and what the pattern wanted there;
    among alternatives, the one that matched the most nodes speaks."""
    w = tf.ones([4, 4])
    no_tb = dict(pred=lambda n, v: not n.attr["transpose_b"].b, why="transpose_b is set on '{node}'")
    short = P("Relu", "act", [P("Placeholder")])
    long = P("Relu", "act", [P("BiasAdd", "bias", [P("MatMul", "mm", **no_tb), P("Const", "b")])])
    view, _ = _view(lambda x: tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w, transpose_b=True), tf.ones([4]))))
    with pytest.raises(SkipMatch, match=r"transpose_b is set on '.*MatMul.*'"):
        require([short, long], _node(view, "Relu"), view)
    view, _ = _view(lambda x: tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w), tf.ones([4]) * x[0])))
    with pytest.raises(SkipMatch, match=r"'.*' is Mul, not Const \(the pattern's b\)"):
        require([short, long], _node(view, "Relu"), view)
    with pytest.raises(SkipMatch, match=r"'.*' is Relu, not Sigmoid"):
        require(P("Sigmoid"), _node(view, "Relu"), view)
    checked = P("Relu", "act", [P("BiasAdd", check=lambda n, v: f"'{n.name}' says no")])
    with pytest.raises(SkipMatch, match=r"' says no"):
        require(checked, _node(view, "Relu"), view)
    view, _ = _view(lambda x: tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w), tf.ones([4]))))
    assert require([short, long], _node(view, "Relu"), view)["mm"].op == "MatMul"


def test_require_names_the_diamond_that_differs():
    inner = P("*", "x")
    pattern = P("Mul", "mul", [inner, P("Sigmoid", "sig", [inner])])
    view, _ = _view(lambda x: x * tf.sigmoid(tf.nn.relu(x)))
    with pytest.raises(SkipMatch, match=r"is not the same tensor as x"):
        require(pattern, _node(view, "Mul"), view)


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
