"""Helpers for the serving tests: the subprocess server (from
tf_recopt.serving.launch), and a small tf.Example model with classify
and regress signatures (the zoo's Keras exports only have predict ones)."""
import threading

import tensorflow as tf



def model_config(path, models, labels=None):
    """Writes a ModelServerConfig text proto: models is {name: base_path}."""
    entries = []
    for name, base in models.items():
        extra = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in (labels or {}).get(name, {}).items())
        entries.append(f'config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow"{extra} }}')
    with open(path, "w") as f:
        f.write("model_config_list { " + " ".join(entries) + " }\n")
    return path


class ExampleModel(tf.Module):
    """Reads tf.Examples with a float feature `x` [2] and an int feature
    `bucket`; classify gives two labelled scores, regress one value."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.w = tf.Variable([[1.0, -1.0], [0.5, 2.0]])
        self.shift = tf.Variable(shift)

    def _parse(self, serialized):
        feats = tf.io.parse_example(serialized, {"x": tf.io.FixedLenFeature([2], tf.float32),
                                                 "bucket": tf.io.FixedLenFeature([1], tf.int64, [0])})
        return feats["x"], tf.cast(feats["bucket"], tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def classify(self, inputs):
        x, bucket = self._parse(inputs)
        scores = tf.nn.softmax(tf.matmul(x, self.w) + bucket + self.shift)
        classes = tf.tile(tf.constant([["neg", "pos"]]), [tf.shape(inputs)[0], 1])
        return {"scores": scores, "classes": classes}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="inputs")])
    def regress(self, inputs):
        x, bucket = self._parse(inputs)
        return {"outputs": tf.reduce_sum(x, axis=1, keepdims=True) + bucket + self.shift}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def predict(self, x):
        return {"y": tf.matmul(x, self.w) + self.shift, "total": tf.reduce_sum(x, keepdims=True)}


def export_example_model(path, shift=0.0):
    module = ExampleModel(shift)
    tf.saved_model.save(module, path, signatures={"serving_default": module.classify,
                                                  "classify_x": module.classify,
                                                  "regress_x": module.regress,
                                                  "predict_x": module.predict})
    return path


def example(x, bucket=None):
    ex = tf.train.Example()
    ex.features.feature["x"].float_list.value.extend(x)
    if bucket is not None:
        ex.features.feature["bucket"].int64_list.value.append(bucket)
    return ex


def concurrently(fn, args, timeout=60):
    """fn(*a) for each a in args, each in its own thread; (results, errors)
    in the order of args."""
    results, errors = [None] * len(args), [None] * len(args)

    def run(i):
        try:
            results[i] = fn(*args[i])
        except Exception as exc:  # collected and asserted on
            errors[i] = exc
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(args))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return results, errors
