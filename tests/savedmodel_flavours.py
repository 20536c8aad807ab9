"""Builders for the SavedModel flavours optimize() must handle (besides the zoo's
Keras 3 and tf_keras exports)."""
import os

import numpy as np
import tensorflow as tf

RNG = np.random.default_rng(11)


def _const(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


class MultiSignatureModule(tf.Module):
    """Several signatures; float, int32, int64 and string inputs; a vocabulary asset."""

    def __init__(self, vocab_path):
        super().__init__()
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.TextFileInitializer(vocab_path, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                          tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER), default_value=0)
        self.emb = tf.Variable(_const(64, 8), name="embedding")
        self.w1, self.b1 = tf.Variable(_const(8 + 4, 16)), tf.Variable(_const(16))
        self.w2, self.b2 = tf.Variable(_const(16, 1)), tf.Variable(_const(1))

    def _mlp(self, x):
        return tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(x, self.w1) + self.b1), self.w2) + self.b2)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="dense"),
                                  tf.TensorSpec([None], tf.string, name="word"),
                                  tf.TensorSpec([None], tf.int32, name="slot")])
    def score(self, dense, word, slot):
        ids = self.table.lookup(word) + tf.cast(slot, tf.int64)
        ids = tf.minimum(ids, 63)
        x = tf.concat([tf.gather(self.emb, ids), dense], axis=1)
        return {"prob": self._mlp(x), "ids": ids}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="item")])
    def embed(self, item):
        return {"vector": tf.gather(self.emb, item)}


def export_multi_signature(path):
    vocab = os.path.join(os.path.dirname(path), "vocab.txt")
    with open(vocab, "w") as f:
        f.write("\n".join(["pad", "apple", "banana", "cherry", "durian"]) + "\n")
    module = MultiSignatureModule(vocab)
    tf.saved_model.save(module, path, signatures={"serving_default": module.score, "embed": module.embed})
    os.remove(vocab)  # the SavedModel must carry its own copy
    return path


def export_tf1_builder(path):
    """A TF1 SavedModelBuilder export with a classic SignatureDef."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 6], name="features")
        w1 = tf.compat.v1.get_variable("w1", initializer=_const(6, 10))
        b1 = tf.compat.v1.get_variable("b1", initializer=_const(10))
        w2 = tf.compat.v1.get_variable("w2", initializer=_const(10, 2))
        h = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, w1), b1))
        y = tf.nn.softmax(tf.matmul(h, w2), name="probs")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            sig = tf.compat.v1.saved_model.predict_signature_def({"features": x}, {"probs": y})
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING],
                                                 signature_def_map={"serving_default": sig})
            builder.save()
    return path


def export_tf1_feature_columns(path):
    """A TF1 Estimator-style export: feature columns over partitioned
    embedding variables (fixed_size_partitioner, so embedding_lookup's "div"
    strategy over 3 shards each), hashed strings, a multi-hot sqrtn column,
    an identity column and a weighted one (weighted_categorical_column: a
    weighted safe_embedding_lookup_sparse), into a linear logit."""
    graph = tf.Graph()
    fc = tf.compat.v1.feature_column
    with graph.as_default():
        inputs = {"user": tf.compat.v1.placeholder(tf.string, [None, 1], name="user"),
                  "tags": tf.compat.v1.placeholder(tf.string, [None, 3], name="tags"),
                  "item": tf.compat.v1.placeholder(tf.int64, [None, 1], name="item"),
                  "clicks": tf.compat.v1.placeholder(tf.int64, [None, 2], name="clicks"),
                  "clicks_weight": tf.compat.v1.placeholder(tf.float32, [None, 2], name="clicks_weight")}
        clicks = fc.weighted_categorical_column(fc.categorical_column_with_identity("clicks", 200), "clicks_weight")
        columns = [fc.embedding_column(fc.categorical_column_with_hash_bucket("user", 1000), 8),
                   fc.embedding_column(fc.categorical_column_with_hash_bucket("tags", 500), 4, combiner="sqrtn"),
                   fc.embedding_column(fc.categorical_column_with_identity("item", 300), 6, combiner="sum"),
                   fc.embedding_column(clicks, 5)]
        with tf.compat.v1.variable_scope("input", partitioner=tf.compat.v1.fixed_size_partitioner(3)):
            x = fc.input_layer(inputs, columns)
        w = tf.compat.v1.get_variable("logit_w", initializer=_const(23, 1))
        logit = tf.identity(tf.matmul(x, w), name="logit")
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(path)
            sig = tf.compat.v1.saved_model.predict_signature_def(inputs, {"logit": logit})
            builder.add_meta_graph_and_variables(sess, [tf.saved_model.SERVING],
                                                 signature_def_map={"serving_default": sig})
            builder.save()
    return path


class ParsingModule(tf.Module):
    """A parsing signature: serialized tf.Examples in, like TF Serving's classify path."""

    def __init__(self):
        super().__init__()
        self.w, self.b = tf.Variable(_const(3, 5)), tf.Variable(_const(5))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        feats = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([3], tf.float32)})
        return {"logits": tf.nn.relu(tf.matmul(feats["x"], self.w) + self.b)}


def export_parsing(path):
    module = ParsingModule()
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def write_examples(path, n=6):
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            ex = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=RNG.standard_normal(3).tolist()))}))
            writer.write(ex.SerializeToString())
    return path
