"""The AUC / logloss gate (options.label_key): metrics against independent
computations, the gate replacing element-wise tolerance for probability
outputs, refusal of a model built to break under int8 (an outlier input
channel), the fp32 fallback that then accepts it, and clear errors."""
import itertools

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tf_recopt import accuracy
from tests.test_fused_mlp_int8 import INT8

RNG = np.random.default_rng(41)
WIDTH = 64


def test_auc_equals_the_pairwise_count():
    """Against the definition: the share of (positive, negative) pairs the
    scores order correctly, ties counting one half."""
    for n in (2, 7, 50):
        labels = RNG.integers(0, 2, n)
        labels[:2] = [0, 1]
        scores = np.round(RNG.random(n), 1)  # many ties
        pos, neg = scores[labels == 1], scores[labels == 0]
        want = np.mean([1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg)])
        assert accuracy.auc(labels, scores) == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="both classes"):
        accuracy.auc([1, 1], [0.2, 0.3])


def test_logloss_clips_like_keras():
    y, p = np.array([1.0, 0.0, 1.0]), np.array([0.9, 0.2, 0.0])
    want = -np.mean([np.log(0.9), np.log(0.8), np.log(1e-7)])
    assert accuracy.logloss(y, p) == pytest.approx(want, rel=1e-12)


class _Ranker(tf.Module):
    """A 64-128-64-1 sigmoid MLP; with outlier=True, input 0 is a huge
    feature the model barely uses (weight 1e-6): fp32 ignores it, while one
    int8 scale per input row then rounds every other feature to 0."""

    def __init__(self, seed):
        rng = np.random.default_rng(seed)
        dims = [WIDTH, 128, 64, 1]
        self.ws = [tf.constant((rng.standard_normal((a, b)) * 1.5 / np.sqrt(a)).astype(np.float32))
                   for a, b in zip(dims, dims[1:])]
        w0 = self.ws[0].numpy()
        w0[0] = 1e-6
        self.ws[0] = tf.constant(w0)
        self.bs = [tf.constant(np.zeros(b, np.float32)) for b in dims[1:]]

    @tf.function(input_signature=[tf.TensorSpec([None, WIDTH], tf.float32, name="dense")])
    def serve(self, dense):
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(dense, self.ws[0]), self.bs[0]))
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(h, self.ws[1]), self.bs[1]))
        return {"ctr": tf.sigmoid(tf.nn.bias_add(tf.matmul(h, self.ws[2]), self.bs[2]))}


def _data(tmp_path, outlier, n=2000):
    """Saved model + TFRecords whose 'clicked' labels the model predicts well."""
    model = _Ranker(3)
    x = RNG.standard_normal((n, WIDTH)).astype(np.float32)
    if outlier:
        x[:, 0] = 3e4
    p = model.serve(tf.constant(x))["ctr"].numpy().ravel()
    clicked = (RNG.random(n) < p).astype(np.float32)
    src = str(tmp_path / "model")
    tf.saved_model.save(model, src, signatures={"serving_default": model.serve})
    path = str(tmp_path / "examples.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for row, label in zip(x, clicked):
            w.write(tf.train.Example(features=tf.train.Features(feature={
                "dense": tf.train.Feature(float_list=tf.train.FloatList(value=row)),
                "clicked": tf.train.Feature(float_list=tf.train.FloatList(value=[label])),
            })).SerializeToString())
    return src, path


def test_metrics_gate_the_probability_output_instead_of_tolerance(ops, tmp_path):
    """rtol = atol = 0 fails any int8 model element-wise; with labels the
    AUC/logloss budget decides, and the report gives both models' metrics."""
    src, examples = _data(tmp_path, outlier=False)
    report = tf_recopt.optimize(src, str(tmp_path / "out"), precision="int8", sample_inputs=examples,
                                label_key="clicked", rtol=0.0, atol=0.0, metric_examples=1500)
    (m,) = report.signatures["serving_default"].metrics
    assert m.examples == 1500 and m.label == "clicked" and m.ok
    assert 0.6 < m.auc < 1.0 and abs(m.auc - m.auc_optimized) <= 0.0005
    assert m.logloss_optimized <= m.logloss * 1.001
    if INT8:
        assert m.logloss_optimized != m.logloss  # the int8 arithmetic is real
    assert "accuracy serving_default/ctr vs 'clicked' over 1500 examples: AUC" in str(report)
    # The same model without labels and with zero tolerance is refused.
    if INT8:
        with pytest.raises(tf_recopt.ParityError, match="beyond rtol=0.0"):
            tf_recopt.optimize(src, str(tmp_path / "strict"), precision="int8", sample_inputs=examples,
                               rtol=0.0, atol=0.0)


def test_an_outlier_channel_is_refused_then_accepted_in_fp32(ops, tmp_path):
    src, examples = _data(tmp_path, outlier=True)
    kwargs = dict(sample_inputs=examples, label_key="clicked", metric_examples=1000)
    if not INT8:  # int8 layers run fp32 here: nothing to refuse
        assert tf_recopt.optimize(src, str(tmp_path / "o"), precision="int8", **kwargs).parity_ok
        return
    with pytest.raises(tf_recopt.ParityError, match=r"AUC 0\.\d+ -> 0\.\d+ \(drop") as info:
        tf_recopt.optimize(src, str(tmp_path / "refused"), precision={"dense": "int8"}, **kwargs)
    assert not (tmp_path / "refused").exists()
    (m,) = info.value.report.signatures["serving_default"].metrics
    assert m.auc - m.auc_optimized > 0.0005
    report = tf_recopt.optimize(src, str(tmp_path / "accepted"), precision="int8", **kwargs)
    (fallback,) = report.precision_fallbacks
    assert "max_auc_drop" in fallback and report.precision["dense"] == "fp32"
    (m,) = report.signatures["serving_default"].metrics
    assert m.ok and abs(m.auc - m.auc_optimized) < 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({"label_key": "clicks"}, r"label_key 'clicks': example 0 of .* has no feature 'clicks' \(it has \['clicked', "),
    ({"label_key": {"score": "clicked"}}, "no signature has a per-example probability output"),
    ({"label_key": "dense"}, "example 0 .* holds 64 values; a label is one number"),
    ({"label_key": "clicked", "sample_inputs": None}, "label_key='clicked' needs sample_inputs"),
])
def test_label_errors_name_the_feature_and_the_records(ops, tmp_path, kwargs, message):
    src, examples = _data(tmp_path, outlier=False, n=50)
    kwargs = {"sample_inputs": examples, **kwargs}
    with pytest.raises(ValueError, match=message):
        tf_recopt.optimize(src, str(tmp_path / "out"), **kwargs)
    assert not (tmp_path / "out").exists()
