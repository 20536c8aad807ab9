"""Writes signature feeds as tf.Examples (one feature per input, named like
it), the form TFX ExampleGen hands to the components after it."""
import numpy as np
import tensorflow as tf


def feature(values):
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind in "fc":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values.tolist()))
    if values.dtype.kind in "iub":
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values.astype(np.int64).tolist()))
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v if isinstance(v, bytes) else str(v).encode()
                                                                 for v in values]))


def feeds_to_examples(feeds):
    arrays = {k: np.asarray(v) for k, v in feeds.items()}
    batch = len(next(iter(arrays.values())))
    return [tf.train.Example(features=tf.train.Features(feature={k: feature(a[i]) for k, a in arrays.items()}))
            for i in range(batch)]


def write_examples(path, examples, gzip=False):
    options = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
    with tf.io.TFRecordWriter(path, options) as writer:
        for ex in examples:
            writer.write(ex.SerializeToString())
    return path
