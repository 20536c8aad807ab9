"""Parity feeds from tf.Example TFRecords (tf_recopt.example_feeds)."""
import os
import types

import numpy as np
import pytest
import tensorflow as tf

import tf_recopt
from tests.examples_util import feeds_to_examples, write_examples
from tf_recopt import example_feeds
from tf_recopt.verify import generate_inputs
from tf_recopt.saved_model_io import load as load_model
from tf_recopt.options import OptimizeOptions


def _sig(**specs):
    return types.SimpleNamespace(name="serving_default", input_specs=specs)


def _records(feeds):
    return [ex.SerializeToString() for ex in feeds_to_examples(feeds)]


def test_keyed_inputs_take_shape_and_dtype_from_signature():
    sig = _sig(dense=tf.TensorSpec([None, 2, 3], tf.float32), ids=tf.TensorSpec([None], tf.int32),
               hist=tf.TensorSpec([None, None], tf.int64), word=tf.TensorSpec([None], tf.string))
    feeds = {"dense": np.arange(12, dtype=np.float32).reshape(2, 6), "ids": np.array([5, 7]),
             "hist": np.array([[1, 2, 3], [4, 5, 6]]), "word": np.array([b"a", b"b"], dtype=object)}
    got = example_feeds.feeds_from_examples(sig, _records(feeds))
    assert got["dense"].shape == (2, 2, 3) and got["dense"].dtype == tf.float32
    np.testing.assert_array_equal(got["dense"].numpy().reshape(2, 6), feeds["dense"])
    assert got["ids"].dtype == tf.int32 and got["ids"].numpy().tolist() == [5, 7]
    assert got["hist"].shape == (2, 3) and got["hist"].numpy()[1].tolist() == [4, 5, 6]
    assert got["word"].numpy().tolist() == [b"a", b"b"]


def test_parsing_signature_gets_serialized_records():
    records = _records({"x": np.ones([3, 2], np.float32)})
    got = example_feeds.feeds_from_examples(_sig(inputs=tf.TensorSpec([None], tf.string)), records)
    assert got["inputs"].numpy().tolist() == records
    got = example_feeds.feeds_from_examples(_sig(examples=tf.TensorSpec([None, 1], tf.string)), records)
    assert got["examples"].shape == (3, 1)


def test_single_string_input_named_like_a_feature_is_keyed():
    records = _records({"user_id": np.array([b"u1", b"u2"], dtype=object)})
    got = example_feeds.feeds_from_examples(_sig(user_id=tf.TensorSpec([None], tf.string)), records)
    assert got["user_id"].numpy().tolist() == [b"u1", b"u2"]


@pytest.mark.parametrize("feeds,spec,match", [
    ({"other": np.zeros([2, 3], np.float32)}, tf.TensorSpec([None, 3], tf.float32), "no feature 'x'"),
    ({"x": np.zeros([2, 4], np.float32)}, tf.TensorSpec([None, 3], tf.float32), r"takes 3 value\(s\)"),
    ({"x": np.zeros([2, 4], np.float32)}, tf.TensorSpec([None, None, 3], tf.float32), "do not fill it"),
])
def test_mismatched_examples_name_input_and_feature(feeds, spec, match):
    with pytest.raises(ValueError, match=match) as err:
        example_feeds.feeds_from_examples(_sig(x=spec), _records(feeds))
    assert "input 'x'" in str(err.value)


def test_ragged_feature_lengths_are_refused():
    records = [ex.SerializeToString() for ex in feeds_to_examples({"x": np.zeros([1, 2])})]
    records += [ex.SerializeToString() for ex in feeds_to_examples({"x": np.zeros([1, 3])})]
    with pytest.raises(ValueError, match=r"lengths \[2, 3\]"):
        example_feeds.feeds_from_examples(_sig(x=tf.TensorSpec([None, None], tf.float32)), records)


def test_record_that_is_not_an_example():
    with pytest.raises(ValueError, match="record 0 is not a tf.Example"):
        example_feeds.feeds_from_examples(_sig(x=tf.TensorSpec([None], tf.float32)), [b"\xff\xff garbage"])


def test_files_dirs_globs_and_gzip(tmp_path):
    examples = feeds_to_examples({"x": np.arange(10, dtype=np.float32)})
    split = tmp_path / "Split-eval"
    split.mkdir()
    write_examples(str(split / "data-00000-of-00002.gz"), examples[:4], gzip=True)
    write_examples(str(split / "data-00001-of-00002.gz"), examples[4:], gzip=True)
    files = example_feeds.tfrecord_files(str(split))
    assert [os.path.basename(f) for f in files] == ["data-00000-of-00002.gz", "data-00001-of-00002.gz"]
    assert example_feeds.tfrecord_files(str(split / "*.gz")) == files
    assert example_feeds.tfrecord_files([files[1]]) == files[1:]
    records = example_feeds.read_records(files, 6)   # crosses the file boundary
    got = example_feeds.feeds_from_examples(_sig(x=tf.TensorSpec([None], tf.float32)), records)
    assert got["x"].numpy().tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError, match="no TFRecord files"):
        example_feeds.tfrecord_files(str(tmp_path / "missing*"))


def test_optimize_takes_parity_inputs_from_gzip_examples(ops, zoo_dir, tmp_path):
    src = zoo_dir("dlrm")
    sig = load_model(src, OptimizeOptions()).signatures["serving_default"]
    feeds = {k: v.numpy() for k, v in generate_inputs(sig, src, 5, seed=3).items()}
    path = write_examples(str(tmp_path / "eval.gz"), feeds_to_examples(feeds), gzip=True)
    report = tf_recopt.optimize(src, str(tmp_path / "out"), sample_inputs=[path])
    assert report.parity_ok and report.signatures["serving_default"].parity
    del feeds["cat_0"]   # the examples are what parity runs on: a missing feature is named
    path = write_examples(str(tmp_path / "bad.gz"), feeds_to_examples(feeds), gzip=True)
    with pytest.raises(ValueError, match="input 'cat_0'.*no feature 'cat_0'"):
        tf_recopt.optimize(src, str(tmp_path / "out2"), sample_inputs=path)
    assert not os.path.exists(tmp_path / "out2")
