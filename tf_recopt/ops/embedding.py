"""Python face of Recopt>FusedEmbeddingLookup: a per-feature spec, the
attrs it maps to, and a call helper used by the pass, tests and benchmarks."""
import dataclasses
from typing import List, Optional, Sequence

LAYOUTS = ("dense", "ragged", "segments", "segments_n")
COMBINERS = ("none", "sum", "mean", "sqrtn")
PARTITIONS_PER_LAYOUT = {"dense": 0, "ragged": 1, "segments": 1, "segments_n": 2}
OP_NAME = "Recopt>FusedEmbeddingLookup"


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


def fused_embedding_lookup(ops, tables, features: Sequence[EmbeddingFeature], ids: List,
                           partitions: Optional[List[Sequence]] = None,
                           weights: Optional[List] = None, concat=False):
    """Calls the op. partitions[f]: the feature's row_splits / segment ids
    (+ num_segments) or () for dense; weights[f]: per-id weights or None.
    Tables may be tensors or tf.Variables (passed by handle, never copied),
    or ShardedTables of them."""
    import tensorflow as tf
    partitions = partitions or [()] * len(features)
    weights = weights or [None] * len(features)
    flat_parts = [p for parts in partitions for p in parts]
    flat_weights = [w for f, w in zip(features, weights) if f.weighted]
    groups = [t.shards if isinstance(t, ShardedTable) else (t,) for t in tables]
    table_inputs = [s.handle if isinstance(s, tf.Variable) else s for g in groups for s in g]
    from grappler_passes.embedding_storage import ROWWISE_EXTRA
    dims = [int(g[0].shape[-1]) - (ROWWISE_EXTRA if g[0].dtype == tf.uint8 else 0)
            if g[0].shape.rank == 2 and g[0].shape[-1] is not None else -1 for g in groups]
    sharded = any(isinstance(t, ShardedTable) for t in tables)
    shards = [len(g) for g in groups] if sharded else ()
    partitioning = [getattr(t, "partitioning", "div") for t in tables] if sharded else ()
    out = ops.recopt_fused_embedding_lookup(
        tables=table_inputs, ids=list(ids), partitions=flat_parts, weights=flat_weights,
        **op_attrs(features, dims, concat, shards, partitioning))
    return out[0] if concat else list(out)



def __getattr__(name):
    """The 8-bit row-wise table format lives with the pass that writes it
    (grappler_passes.embedding_storage: passes never import the package);
    read here lazily, since importing the passes imports this module."""
    if name in ("ROWWISE_EXTRA", "encode_rowwise_uint8", "decode_rowwise_uint8"):
        from grappler_passes import embedding_storage
        return getattr(embedding_storage, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
