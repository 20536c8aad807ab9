"""Recopt>FusedEmbeddingLookup's attrs and table formats: a per-feature
spec, the attrs it maps to, and FBGEMM's 8-bit row-wise table encoding
(core/embedding.h TableStorage). The pass that emits the op and the call
helper in tf_recopt.ops.embedding both build on it."""
import dataclasses
from typing import Sequence

import numpy as np

from custom_ops.spec import FUSED_EMBEDDING_LOOKUP

OP_NAME = FUSED_EMBEDDING_LOOKUP

LAYOUTS = ("dense", "ragged", "segments", "segments_n")
COMBINERS = ("none", "sum", "mean", "sqrtn")
PARTITIONS_PER_LAYOUT = {"dense": 0, "ragged": 1, "segments": 1, "segments_n": 2}


@dataclasses.dataclass(frozen=True)
class EmbeddingFeature:
    """One lookup: which table, how its ids are structured and combined."""
    table: int
    layout: str = "dense"
    combiner: str = "none"
    hash_buckets: int = 0        # > 0: StringToHashBucketFast for strings, floormod for ints
    negative_ids: str = "error"  # "wrap": Keras `take` semantics
    weighted: bool = False

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self.combiner not in COMBINERS:
            raise ValueError(f"combiner must be one of {COMBINERS}, got {self.combiner!r}")
        if self.layout != "dense" and self.combiner == "none":
            raise ValueError(f"{self.layout} ids need a combiner other than 'none'")
        if self.negative_ids not in ("error", "wrap"):
            raise ValueError(f"negative_ids must be 'error' or 'wrap', got {self.negative_ids!r}")

    @property
    def num_partitions(self):
        return PARTITIONS_PER_LAYOUT[self.layout]


@dataclasses.dataclass(frozen=True)
class ShardedTable:
    """One table split over several tensors or variables, addressed as
    tf.nn.embedding_lookup addresses a list of them: partition_strategy
    "div" (TF2's only one, and feature columns') or "mod" (TF1's default)."""
    shards: tuple
    partitioning: str = "div"

    def __post_init__(self):
        if len(self.shards) < 1:
            raise ValueError("a sharded table needs at least one shard")
        if self.partitioning not in ("mod", "div"):
            raise ValueError(f"partitioning must be 'mod' or 'div', got {self.partitioning!r}")


def op_attrs(features: Sequence[EmbeddingFeature], table_dims: Sequence[int], concat: bool,
             shards: Sequence[int] = (), partitioning: Sequence[str] = ()):
    """The op's attrs (Ttables/Tids/Tpartitions come from inputs). shards[t]:
    the inputs table t spans (default one each); partitioning[t]: mod/div."""
    return dict(
        table_shards=list(shards), table_partitioning=list(partitioning),
        table_ids=[f.table for f in features], table_dims=list(table_dims),
        layouts=[f.layout for f in features], combiners=[f.combiner for f in features],
        hash_buckets=[f.hash_buckets for f in features],
        negative_ids=[f.negative_ids for f in features],
        weighted=[f.weighted for f in features], concat=concat,
        num_outputs=1 if concat else len(features))


# Bytes after a uint8 row-wise row's codes: its fp32 scale, then fp32 bias.
ROWWISE_EXTRA = 8


def encode_rowwise_uint8(table):
    """A float table [rows, dim] in FBGEMM's fused 8-bit row-wise format
    (core/embedding.h): uint8 [rows, dim + 8], each row's codes
    q = rint((x - min) / scale) with scale = (max - min) / 255 (1 for a
    constant row) and bias = min, then scale and bias as fp32 bytes. Every
    value comes back within scale / 2. ValueError for a NaN or Inf."""
    x = np.asarray(table, np.float32)
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"a row-wise uint8 table needs a [rows, dim] float matrix, got shape {list(x.shape)}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"row {int(np.argmin(finite))} holds a NaN or Inf, which 8-bit codes cannot hold")
    lo = x.min(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    hi = x.max(axis=1) if x.shape[0] else np.zeros(0, np.float32)
    scale = ((hi - lo) / np.float32(255)).astype(np.float32)
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint((x - lo[:, None]) / scale[:, None]), 0, 255).astype(np.uint8)
    extra = np.stack([scale, lo.astype(np.float32)], axis=1).view(np.uint8).reshape(-1, ROWWISE_EXTRA)
    return np.concatenate([codes, extra], axis=1)


def decode_rowwise_uint8(packed):
    """The fp32 values the op reads from a row-wise uint8 table: each
    fma(code, scale, bias), rounded once (float64 holds code * scale exactly)."""
    packed = np.asarray(packed, np.uint8)
    codes = packed[:, :-ROWWISE_EXTRA].astype(np.float64)
    sb = np.ascontiguousarray(packed[:, -ROWWISE_EXTRA:]).view(np.float32).astype(np.float64)
    return (codes * sb[:, :1] + sb[:, 1:]).astype(np.float32)
