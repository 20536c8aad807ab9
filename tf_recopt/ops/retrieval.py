"""Recopt>ScoreTopK's candidate encodings (custom_ops.spec.retrieval,
re-exported) and recall@k, the measure optimize() gates them by."""
import numpy as np

from custom_ops.spec.retrieval import (BLOCK_LANES, EXACT_OP_NAME, EXACT_STORAGES, LAYOUTS, OP_NAME, STORAGES,
                                       TOPK_OP_NAME, centred, encode, encode_exact, quantize_int8, row_bounds,
                                       to_blocks, to_bfloat16)

__all__ = ["BLOCK_LANES", "EXACT_OP_NAME", "EXACT_STORAGES", "LAYOUTS", "OP_NAME", "STORAGES", "TOPK_OP_NAME",
           "centred", "encode", "encode_exact", "quantize_int8", "row_bounds", "to_blocks", "to_bfloat16",
           "recall_at_k"]


def recall_at_k(expected_ids, actual_ids):
    """Mean over rows of |expected ∩ actual| / k (1.0 for k = 0 or no rows)."""
    e, a = np.asarray(expected_ids), np.asarray(actual_ids)
    if e.size == 0:
        return 1.0
    e2, a2 = e.reshape(-1, e.shape[-1]), a.reshape(-1, a.shape[-1])
    hits = [len(set(x.tolist()) & set(y.tolist())) for x, y in zip(e2, a2)]
    return float(np.mean(hits) / e2.shape[1])
