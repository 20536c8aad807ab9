"""Which ragged tensor a segment reduction's row ids come from.

RaggedTensor reductions (and tf_keras' Embedding on ragged input) reduce
UnsortedSegmentSum(values, row_ids(splits), nrows(splits)), where row_ids
and nrows are dozens of index ops whose spelling changes between TensorFlow
versions (tf.repeat, boolean_mask, Range, StridedSlice). They are
recognised by what they compute: probe evaluates them on a few row_splits
(or row lengths) vectors. The ragged embedding matcher and
tf_recopt.ragged_feeds (which builds ragged parity inputs) both ask it.
"""
from typing import Optional, Tuple

import numpy as np
from tensorflow.core.framework import types_pb2

from grappler_passes import probe
from grappler_passes.shapes import dtype_of, shape_of

INT_TYPES = {types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64}
# Uneven rows, empty rows (first, middle, last), a single row, no rows; as
# row_splits (RaggedTensor.from_row_splits) and as row lengths (from_row_lengths).
_PROBE_SPLITS = ([0, 2, 2, 5, 6], [0, 0, 3, 3], [0, 4], [0], [0, 1, 2, 3, 3])
_PROBES = [("splits", np.array(s)) for s in _PROBE_SPLITS] + [("lengths", np.diff(s)) for s in _PROBE_SPLITS]


def _splits_of(kind, probe_value):
    return probe_value if kind == "splits" else np.concatenate([[0], np.cumsum(probe_value)])


def ragged_rows(view, shapes, segments, num_segments) -> Optional[Tuple[str, str]]:
    """("splits" | "lengths", tensor) when `segments` and `num_segments` are
    the row ids and row count of a RaggedTensor with that row_splits or
    row_lengths tensor, else None."""
    found = probe.leaves(view, [segments, num_segments])
    if found is None or len(found) != 1:
        return None
    source = found[0]
    np_type, shape = INT_TYPES.get(dtype_of(shapes, source)), shape_of(shapes, source)
    if np_type is None or (shape is not None and len(shape) != 1):
        return None
    results = probe.evaluate(view, [segments, num_segments], [source], [[v.astype(np_type)] for _, v in _PROBES])
    for kind in ("splits", "lengths"):
        checks = [(_splits_of(k, v), got) for (k, v), got in zip(_PROBES, results) if k == kind]
        if all(got is not None and np.array_equal(got[0], _row_ids(splits)) and int(got[1]) == len(splits) - 1
               for splits, got in checks):
            return kind, source
    return None


def _row_ids(splits):
    return np.repeat(np.arange(len(splits) - 1), np.diff(splits))
