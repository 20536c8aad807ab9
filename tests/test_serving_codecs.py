"""Request decoding on its own: TensorProto fast paths against
tf.make_ndarray, and the REST JSON formats."""
import json

import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.serving import json_codec, status, tensors


@pytest.mark.parametrize("value", [
    np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], np.int64), np.array([[True], [False]]),
    np.array([7], np.int32), np.zeros((0, 4), np.float64), np.array([b"a", b"\xff"], dtype=object),
    np.array([1.5], np.float16),
])
def test_tensor_proto_round_trip_matches_tensorflow(value):
    proto = tf.make_tensor_proto(value)
    got = tensors.to_array(proto, "x")
    expected = tf.make_ndarray(proto)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    back = tf.make_ndarray(tensors.to_proto(got))
    np.testing.assert_array_equal(back, value)


def _typed_int64(values, shape):
    """A TensorProto in the typed-field encoding (int64_val), not tensor_content."""
    proto = tf.make_tensor_proto(0, tf.int64)
    proto.ClearField("int64_val")
    proto.int64_val.extend(values)
    for size in shape:  # set by hand: malformed sizes must get through
        proto.tensor_shape.dim.add().size = size
    return proto


@pytest.mark.parametrize("values", [[9], []])
def test_typed_fields_follow_tensorflow_padding_rule(values):
    proto = _typed_int64(values, [4])
    np.testing.assert_array_equal(tensors.to_array(proto, "x"), tf.make_ndarray(proto))


@pytest.mark.parametrize("values, shape", [
    ([1, 2, 3, 4, 5], [2]),     # more values than the shape holds
    ([1, 2], [-3]),             # negative dimension
    ([1, 2], [3]),              # neither a full list nor one value to repeat
])
def test_malformed_typed_tensor_names_the_input(values, shape):
    proto = _typed_int64(values, shape)
    with pytest.raises(status.ServingError, match="input `ids`: malformed TensorProto"):
        tensors.to_array(proto, "ids")


SPECS = {"ids": tf.TensorSpec([None], tf.int64), "dense": tf.TensorSpec([None, 2], tf.float32),
         "tag": tf.TensorSpec([None], tf.string)}


def test_row_and_columnar_give_the_same_feeds():
    rows = {"instances": [{"ids": 1, "dense": [0.5, 1], "tag": "a"}, {"ids": 2, "dense": [2, 3], "tag": {"b64": "/w=="}}]}
    cols = {"inputs": {"ids": [1, 2], "dense": [[0.5, 1], [2, 3]], "tag": ["a", {"b64": "/w=="}]}}
    (a, fa), (b, fb) = json_codec.predict_feeds(rows, SPECS), json_codec.predict_feeds(cols, SPECS)
    assert (fa, fb) == ("row", "columnar")
    for k in SPECS:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["ids"].dtype == np.int64 and a["dense"].dtype == np.float32
    assert list(a["tag"]) == [b"a", b"\xff"]


def test_single_input_signature_takes_bare_values():
    spec = {"x": tf.TensorSpec([None, 2], tf.float32)}
    feeds, _ = json_codec.predict_feeds({"instances": [[1, 2], [3, 4]]}, spec)
    np.testing.assert_array_equal(feeds["x"], [[1, 2], [3, 4]])
    feeds, _ = json_codec.predict_feeds({"inputs": [[1, 2]]}, spec)
    assert feeds["x"].shape == (1, 2)


@pytest.mark.parametrize("body, fragment", [
    ({"inputs": {"ids": [1.5], "dense": [[1, 2]], "tag": ["a"]}}, "input `ids`: expects int64"),
    ({"inputs": {"ids": [True], "dense": [[1, 2]], "tag": ["a"]}}, "input `ids`: expects int64"),
    ({"inputs": {"ids": [2 ** 70], "dense": [[1, 2]], "tag": ["a"]}}, "input `ids`: cannot convert"),
    ({"inputs": {"ids": [1], "dense": [[1, 2], [3]], "tag": ["a"]}}, "input `dense`: nested lists are not rectangular"),
    ({"inputs": {"ids": [1], "dense": [[1, 2]], "tag": [3]}}, "input `tag`: expects strings"),
    ({"inputs": {"ids": [1], "dense": [[1, 2]], "tag": [{"b64": "%%"}]}}, "input `tag`: malformed base64"),
    ({"instances": []}, "'instances' is empty"),
    ({"instances": {"ids": 1}}, "must be a JSON list"),
    ({"instances": [1, 2]}, "each instance must be an object"),
    ({"signature_name": "x"}, "exactly one of 'instances'"),
])
def test_bad_json_names_the_fault(body, fragment):
    with pytest.raises(status.ServingError, match=fragment.replace("[", r"\[").replace("(", r"\(")) as e:
        json_codec.predict_feeds(body, SPECS)
    assert e.value.http_status == 400


def test_responses_in_both_formats():
    outputs = {"score": np.array([[0.5], [np.nan]], np.float32), "id_bytes": np.array([b"\x00", b"a"], object),
               "label": np.array([b"x", b"y"], object)}
    row = json.loads(json.dumps(json_codec.predict_response(outputs, "row")))
    assert row["predictions"][0] == {"score": [0.5], "id_bytes": {"b64": "AA=="}, "label": "x"}
    assert np.isnan(row["predictions"][1]["score"][0])
    col = json_codec.predict_response({"score": outputs["score"]}, "columnar")
    assert col["outputs"][0] == [0.5]
    with pytest.raises(status.ServingError, match="batch dimension"):
        json_codec.predict_response({"a": np.zeros(2), "b": np.zeros(3)}, "row")
