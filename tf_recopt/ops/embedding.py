"""Python face of Recopt>FusedEmbeddingLookup: the per-feature spec and
table formats (custom_ops.spec.embedding, re-exported) and a call helper
used by tests and benchmarks."""
from typing import List, Optional, Sequence

from custom_ops.spec.embedding import (COMBINERS, LAYOUTS, OP_NAME, PARTITIONS_PER_LAYOUT, ROWWISE_EXTRA,
                                       EmbeddingFeature, ShardedTable, decode_rowwise_uint8,
                                       encode_rowwise_uint8, op_attrs)

__all__ = ["COMBINERS", "LAYOUTS", "OP_NAME", "PARTITIONS_PER_LAYOUT", "ROWWISE_EXTRA", "EmbeddingFeature", "ShardedTable", "decode_rowwise_uint8", "encode_rowwise_uint8", "op_attrs", "fused_embedding_lookup"]


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
    dims = [int(g[0].shape[-1]) - (ROWWISE_EXTRA if g[0].dtype == tf.uint8 else 0)
            if g[0].shape.rank == 2 and g[0].shape[-1] is not None else -1 for g in groups]
    sharded = any(isinstance(t, ShardedTable) for t in tables)
    shards = [len(g) for g in groups] if sharded else ()
    partitioning = [getattr(t, "partitioning", "div") for t in tables] if sharded else ()
    out = ops.recopt_fused_embedding_lookup(
        tables=table_inputs, ids=list(ids), partitions=flat_parts, weights=flat_weights,
        **op_attrs(features, dims, concat, shards, partitioning))
    return out[0] if concat else list(out)
