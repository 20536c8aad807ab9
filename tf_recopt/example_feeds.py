"""Parity feeds from tf.Example TFRecord files (TFX ExampleGen output or any
TFRecord of tf.Examples).

A parsing signature (one string input) gets the serialized records as they
are. Any other signature gets, for each input, the feature of the same name
from each example, stacked on the batch dimension: this is how a Keras model
exported with one named input per feature is fed from the pipeline's data.
"""
import os

import numpy as np
import tensorflow as tf


def tfrecord_files(given):
    """Files named by a path, a directory (every file in it), a glob, or a list of those."""
    paths = [given] if isinstance(given, (str, os.PathLike)) else list(given)
    files = []
    for path in map(os.fspath, paths):
        if tf.io.gfile.isdir(path):
            files += sorted(os.path.join(path, f) for f in tf.io.gfile.listdir(path)
                            if not tf.io.gfile.isdir(os.path.join(path, f)))
        elif tf.io.gfile.exists(path):
            files.append(path)
        else:
            files += sorted(tf.io.gfile.glob(path))
    if not files:
        raise ValueError(f"sample_inputs {given}: no TFRecord files found")
    return files


def read_records(files, limit):
    """Up to `limit` records; ExampleGen writes GZIP files named *.gz."""
    records = []
    for path in files:
        compression = "GZIP" if path.endswith(".gz") else ""
        for record in tf.data.TFRecordDataset(path, compression_type=compression).take(limit - len(records)):
            records.append(record.numpy())
        if len(records) >= limit:
            break
    if not records:
        raise ValueError(f"sample_inputs {files}: no records")
    return records


def feeds_from_examples(sig, records):
    """Signature feeds from serialized tf.Examples (see the module docstring)."""
    specs = sig.input_specs
    examples = [parse_example(sig.name, i, r) for i, r in enumerate(records)]
    if _is_parsing_signature(specs, examples[0]):
        key, spec = next(iter(specs.items()))
        value = tf.constant(records)
        if spec.shape.rank not in (None, 1):
            value = tf.reshape(value, [-1] + [1] * (spec.shape.rank - 1))
        return {key: value}
    return {key: _stack_feature(sig.name, key, spec, examples) for key, spec in specs.items()}


def _is_parsing_signature(specs, first):
    """One string input that is not itself a feature of the examples."""
    if len(specs) != 1:
        return False
    key, spec = next(iter(specs.items()))
    return spec.dtype == tf.string and key not in first.features.feature


def parse_example(signature, index, record):
    try:
        return tf.train.Example.FromString(record)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError types
        raise ValueError(f"sample_inputs for signature '{signature}': record {index} is not a "
                         f"tf.Example ({e})") from e


def _stack_feature(signature, key, spec, examples):
    rows = []
    for i, example in enumerate(examples):
        feature = example.features.feature
        if key not in feature:
            raise ValueError(f"signature '{signature}' input '{key}': example {i} has no feature '{key}' "
                             f"(it has {sorted(feature)[:20]})")
        rows.append(feature_values(feature[key]))
    return tf.constant(_shape_rows(signature, key, spec, rows), dtype=spec.dtype)


def feature_values(feature):
    kind = feature.WhichOneof("kind")
    if kind is None:
        return np.zeros([0], np.float32)
    values = getattr(feature, kind).value
    return np.array(list(values), dtype=object if kind == "bytes_list" else None)


def _shape_rows(signature, key, spec, rows):
    """[batch] + the signature's per-example shape; unknown dims take the examples' length."""
    dims = spec.shape.as_list()[1:] if spec.shape.rank is not None else [None]
    lengths = {len(r) for r in rows}
    known = int(np.prod([d for d in dims if d is not None])) if dims else 1
    if None not in dims:
        if lengths != {known}:
            raise ValueError(f"signature '{signature}' input '{key}' takes {known} value(s) per example; "
                             f"the examples' feature '{key}' has {sorted(lengths)}")
        return np.stack(rows).reshape([len(rows)] + dims)
    if len(lengths) != 1 or dims.count(None) != 1 or next(iter(lengths)) % known:
        raise ValueError(f"signature '{signature}' input '{key}' has per-example shape {dims}; the examples' "
                         f"feature '{key}' has lengths {sorted(lengths)}, which do not fill it in one way")
    free = next(iter(lengths)) // known
    return np.stack(rows).reshape([len(rows)] + [free if d is None else d for d in dims])
