"""Candidate storage for Recopt>ScoreTopK, chosen once at optimize time:
the encoders fuse_topk applies to a candidate matrix, and the op's layouts."""
import numpy as np

from custom_ops.spec import EXACT_SCORE_TOPK, SCORE_TOPK, TOPK

OP_NAME = SCORE_TOPK
EXACT_OP_NAME = EXACT_SCORE_TOPK
TOPK_OP_NAME = TOPK
STORAGES = ("fp32", "bf16", "int8")
# Storages Recopt>ExactScoreTopK scans (then rescoring from fp32 rows).
EXACT_STORAGES = ("bf16", "int8")
# Smallest row bound for bf16 rows: keeps 2^-8 x bound above the absolute
# rounding error of subnormals (core/score_exact.h).
BF16_MIN_ROW_BOUND = 2.0 ** -100
LAYOUTS = ("rows", "blocks16")
BLOCK_LANES = 16  # custom_ops/core/isa_kernels.h kScoreLanes


def quantize_int8(candidates):
    """Symmetric per-row int8: row j is q[j] * scales[j], |q| <= 127.

    Per row, not per matrix, because candidate norms vary widely (popular
    items have long vectors) and one scale would crush the short rows' scores
    into a few levels. An all-zero row gets scale 1 (its scores stay 0).
    """
    c = np.asarray(candidates, dtype=np.float32)
    peak = np.max(np.abs(c), axis=1) if c.size else np.zeros(c.shape[0], np.float32)
    scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(c / scales[:, None]), -127, 127).astype(np.int8)
    return q, scales


def centred(candidates):
    """(c - centre, centre) with centre the mean row: what
    Recopt>ExactScoreTopK quantizes. Item embeddings often share a common
    direction far larger than their spread; per-row scales over the raw
    rows would then be steps far above the score differences that decide
    the top k, and the bound would keep most candidates."""
    c = np.asarray(candidates, np.float32)
    centre = c.mean(axis=0, dtype=np.float64).astype(np.float32) if len(c) else np.zeros(c.shape[1], np.float32)
    return c - centre, centre


def row_bounds(candidates, storage, row_scales=None):
    """Recopt>ExactScoreTopK's row_bounds for `storage`: the int8 row scales
    (each value within half a scale step), or for bf16 each row's largest
    |value| (each value within 2^-8 of itself)."""
    if storage == "int8":
        return np.asarray(row_scales, np.float32)
    if storage != "bf16":
        raise ValueError(f"exact scoring scans {EXACT_STORAGES}, not {storage!r}")
    c = np.asarray(candidates, np.float32)
    peak = np.max(np.abs(c), axis=1) if c.size else np.zeros(c.shape[0], np.float32)
    return np.maximum(peak, np.float32(BF16_MIN_ROW_BOUND)).astype(np.float32)


def encode_exact(candidates, storage, centre=True):
    """Recopt>ExactScoreTopK's inputs for [n, d] fp32 candidates (beside the
    rows themselves): (blocks16 candidates, row_scales, row_bounds, centre),
    quantized from the residuals c - centre, or from c with centre=False
    (then centre is empty)."""
    if centre:
        residual, mid = centred(candidates)
    else:
        residual, mid = np.asarray(candidates, np.float32), np.zeros([0], np.float32)
    stored, scales = encode(residual, storage)
    return to_blocks(stored), scales, row_bounds(residual, storage, scales), mid


def to_bfloat16(candidates):
    """Round-to-nearest-even bfloat16, as tf.cast does."""
    import tensorflow as tf
    return tf.cast(tf.constant(np.asarray(candidates, np.float32)), tf.bfloat16).numpy()


def encode(candidates, storage):
    """(stored matrix, row_scales) for `storage`; row_scales is empty unless int8."""
    if storage == "fp32":
        return np.asarray(candidates, np.float32), np.zeros([0], np.float32)
    if storage == "bf16":
        return to_bfloat16(candidates), np.zeros([0], np.float32)
    if storage == "int8":
        return quantize_int8(candidates)
    raise ValueError(f"candidate storage {storage!r}: supported {STORAGES}")


def to_blocks(stored):
    """[n, d] -> [ceil(n / 16), d, 16] for Recopt>ScoreTopK's "blocks16"
    layout: candidate j's element e at [j // 16, e, j % 16], the last block
    padded with zero rows (the op never returns them: it takes n as
    num_candidates).

    The op reads one block's element e for 16 candidates as one vector, so
    their scores build up lane by lane with no horizontal sums.
    """
    stored = np.asarray(stored)
    if stored.ndim != 2:
        raise ValueError(f"candidates must be [n, d], got shape {stored.shape}")
    n, d = stored.shape
    full, tail = divmod(n, BLOCK_LANES)
    out = np.zeros((full + (tail > 0), d, BLOCK_LANES), stored.dtype)
    # One pass over the matrix (optimize() must stay fast on GiB-sized ones).
    out[:full] = stored[:full * BLOCK_LANES].reshape(full, BLOCK_LANES, d).transpose(0, 2, 1)
    if tail:
        out[full, :, :tail] = stored[full * BLOCK_LANES:].T
    return out
