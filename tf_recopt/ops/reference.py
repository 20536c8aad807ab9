"""Pure-TensorFlow references for every custom op: same inputs, same outputs.
Tests use them as oracles; they also document each op's exact semantics."""
import tensorflow as tf

from custom_ops.spec.activations import ACTIVATIONS as _ACTIVATIONS
from custom_ops.spec.activations import ACTIVATION_NAMES  # re-exported: tests parametrize over it


def _bf16(t):
    return tf.cast(tf.cast(t, tf.bfloat16), tf.float32)


def quantize_rows(x, unsigned=False):
    """Recopt's dynamic int8 rounding (core/quantize.h), along the last axis:
    (q, scale) with x ~ q * scale, q integer-valued in [-127, 127], or
    [0, 255] when unsigned; fp32 arithmetic in the same order as the op's."""
    x = tf.convert_to_tensor(x, tf.float32)
    qmax = tf.constant(255.0 if unsigned else 127.0, tf.float32)
    amax = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)
    zero = tf.equal(amax, 0.0)
    safe = tf.where(zero, tf.ones_like(amax), amax)
    scale = tf.where(zero, tf.ones_like(amax), safe / qmax)
    inv = tf.where(zero, tf.ones_like(amax), qmax / safe)
    q = tf.clip_by_value(tf.round(x * inv), 0.0 if unsigned else -127.0, qmax)  # tf.round: half to even
    return q, scale


_NON_NEGATIVE = ("relu", "relu6", "sigmoid", "softplus")


def _int8_layer(h, w, b, act, alpha, unsigned):
    """One int8 layer as the oneDNN backend runs it: integer products
    (exact: float64 holds every int32 sum), then fp32 column scale, row
    scale, bias, activation."""
    q, row_scale = quantize_rows(h, unsigned)
    wq, col_scale = quantize_rows(tf.transpose(w))
    acc = tf.tensordot(tf.cast(q, tf.float64), tf.cast(tf.transpose(wq), tf.float64), axes=1)
    y = tf.cast(acc, tf.float32) * tf.reshape(col_scale, [-1])
    return _ACTIVATIONS[act](y * row_scale + b, alpha)


def fused_mlp(x, weights, biases, activations, alphas, weights_bf16=False, inputs_bf16=False, int8_layers=()):
    """Recopt>FusedMLP: act_l(h @ W_l + b_l) over the last axis, layer by layer.
    weights_bf16: weights rounded to bfloat16 (nearest even), all else fp32
    (the hand kernels, gemm="packed"). inputs_bf16 as well: every layer's
    input rounded to bfloat16 too, products summed in fp32 (the oneDNN
    backend's weights_bf16, run on AMX). int8_layers: those layers in the
    oneDNN backend's int8 arithmetic (_int8_layer)."""
    h = x
    for i, (w, b, act, alpha) in enumerate(zip(weights, biases, activations, alphas)):
        if i in int8_layers:
            h = _int8_layer(h, w, b, act, alpha, unsigned=i > 0 and activations[i - 1] in _NON_NEGATIVE)
            continue
        if weights_bf16:
            w = _bf16(w)
        if inputs_bf16:
            h = _bf16(h)
        h = _ACTIVATIONS[act](tf.tensordot(h, w, axes=1) + b, alpha)
    return h


def _resolve_ids(ids, feature, rows):
    if ids.dtype == tf.string:
        ids = tf.strings.to_hash_bucket_fast(ids, feature.hash_buckets)
    elif feature.hash_buckets:
        ids = tf.math.floormod(ids, tf.cast(feature.hash_buckets, ids.dtype))
    if feature.negative_ids == "wrap":
        ids = tf.where(ids < 0, ids + tf.cast(rows, ids.dtype), ids)
    return ids


def _pool_dense(rows, weights, combiner):
    """rows [B, L, D]; weights [B, L] or None -> [B, D] as embedding_lookup_sparse combines."""
    if weights is None:
        weights = tf.ones(tf.shape(rows)[:2], rows.dtype)
    total = tf.reduce_sum(rows * weights[..., None], axis=1)
    if combiner == "sum":
        return total
    norm = tf.reduce_sum(weights if combiner == "mean" else weights * weights, axis=1, keepdims=True)
    return tf.math.divide_no_nan(total, norm if combiner == "mean" else tf.sqrt(norm))


def _pool_segments(table, ids, segments, num_segments, weights, combiner):
    if weights is None:
        op = {"sum": tf.sparse.segment_sum, "mean": tf.sparse.segment_mean,
              "sqrtn": tf.sparse.segment_sqrt_n}[combiner]
        return op(table, ids, segments, num_segments=num_segments)
    if num_segments is None:
        num_segments = tf.cond(tf.size(segments) > 0, lambda: tf.cast(segments[-1], tf.int32) + 1,
                               lambda: 0)
    rows = tf.gather(table, ids) * weights[:, None]
    total = tf.math.unsorted_segment_sum(rows, segments, num_segments)
    if combiner == "sum":
        return total
    w = weights if combiner == "mean" else weights * weights
    norm = tf.math.unsorted_segment_sum(w, segments, num_segments)[:, None]
    return tf.math.divide_no_nan(total, norm if combiner == "mean" else tf.sqrt(norm))


def _one_feature(table, ids, parts, weights, feature):
    table = tf.convert_to_tensor(table)
    if table.dtype == tf.bfloat16:
        table = tf.cast(table, tf.float32)
    if table.dtype == tf.uint8:  # 8-bit row-wise: codes, then fp32 scale and bias
        from tf_recopt.ops.embedding import decode_rowwise_uint8
        table = tf.constant(decode_rowwise_uint8(table.numpy()))
    ids = _resolve_ids(tf.convert_to_tensor(ids), feature, tf.shape(table)[0])
    if feature.layout == "dense":
        rows = tf.gather(table, ids)
        return rows if feature.combiner == "none" else _pool_dense(rows, weights, feature.combiner)
    if feature.layout == "ragged":
        splits = tf.cast(parts[0], tf.int64)
        if weights is None and feature.combiner == "mean":  # empty rows: 0/0 = NaN
            return tf.reduce_mean(tf.gather(table, tf.RaggedTensor.from_row_splits(ids, splits)), axis=1)
        segments = tf.ragged.row_splits_to_segment_ids(splits)
        return _pool_segments(table, ids, segments, tf.size(splits) - 1, weights, feature.combiner)
    num = parts[1] if feature.layout == "segments_n" else None
    return _pool_segments(table, ids, parts[0], num, weights, feature.combiner)


def fused_embedding_lookup(tables, features, ids, partitions=None, weights=None, concat=False):
    """Recopt>FusedEmbeddingLookup (see tf_recopt.ops.embedding) in plain TF ops."""
    partitions = partitions or [()] * len(features)
    weights = weights or [None] * len(features)
    outs = [_one_feature(tables[f.table], i, p, w, f)
            for f, i, p, w in zip(features, ids, partitions, weights)]
    if not concat:
        return outs
    batch = tf.shape(outs[0])[0]
    return tf.concat([tf.reshape(o, [batch, -1]) for o in outs], axis=1)


def dot_interaction(x, indices, dense=None, dense_first=True):
    """Recopt>DotInteraction: columns `indices` (i * F + j) of the flattened
    per-example Gram matrix x x^T, -1 giving a column of zeros; x is
    [B, F, d]. With dense [B, k]: the concat of dense and those columns
    (dense first or last)."""
    f = x.shape[1]
    gram = tf.reshape(tf.matmul(x, x, transpose_b=True), [-1, f * f])
    # A zero column gathers the appended column of zeros at index F*F.
    padded = tf.concat([gram, tf.zeros_like(gram[:, :1])], axis=1)
    y = tf.gather(padded, tf.constant([f * f if i == -1 else i for i in indices], tf.int32), axis=1)
    if dense is None:
        return y
    return tf.concat([dense, y] if dense_first else [y, dense], axis=1)


def afm_pooling(x, attention_w, attention_b, projection_h, rows, cols, activation="relu", alpha=0.0):
    """Recopt>AfmPooling: DeepCTR's AFMLayer up to its attention output.
    x [B, F, d]; pair t multiplies fields rows[t] and cols[t]; returns [B, d]."""
    e = tf.gather(x, tf.constant(rows, tf.int32), axis=1) * tf.gather(x, tf.constant(cols, tf.int32), axis=1)
    hidden = _ACTIVATIONS[activation](tf.tensordot(e, attention_w, axes=1) + attention_b, alpha)
    scores = tf.tensordot(hidden, tf.reshape(projection_h, [-1]), axes=1)  # [B, P]
    return tf.reduce_sum(tf.nn.softmax(scores, axis=1)[:, :, None] * e, axis=1)


def bilinear_interaction(x, weights, biases, rows, cols, weight_index):
    """Recopt>BilinearInteraction: FiBiNET's bilinear products, [B, P, d];
    pair t is (x[:, rows[t]] @ weights[g] + biases[g]) * x[:, cols[t]], g = weight_index[t]."""
    idx = lambda v: tf.constant(v, tf.int32)  # noqa: E731
    w = tf.gather(weights, idx(weight_index))                      # [P, d, d]
    v = tf.einsum("bpi,pij->bpj", tf.gather(x, idx(rows), axis=1), w) + tf.gather(biases, idx(weight_index))
    return v * tf.gather(x, idx(cols), axis=1)


def factorization_machine(x, reduce=True, scale=0.5):
    """Recopt>FactorizationMachine: DeepCTR's FM layer (reduce, [B, 1]) or
    NFM's BiInteractionPooling (not reduce, [B, 1, k]) of x [B, F, k]."""
    square_of_sum = tf.square(tf.reduce_sum(x, axis=1, keepdims=True))
    sum_of_square = tf.reduce_sum(x * x, axis=1, keepdims=True)
    term = scale * (square_of_sum - sum_of_square)
    return tf.reduce_sum(term, axis=2) if reduce else term


def cross_network(x0, kernels, kernel_bias, biases):
    """Recopt>CrossNetwork: DCN's cross layers (vector parameterisation) on
    x0 [B, dim], as DeepCTR's CrossNet computes them on [B, dim, 1]."""
    x0e = tf.expand_dims(x0, 2)
    x = x0e
    for w, c, b in zip(tf.unstack(kernels), tf.unstack(kernel_bias), tf.unstack(biases)):
        s = tf.tensordot(x, tf.reshape(w, [-1, 1]), axes=(1, 0)) + c   # [B, 1, 1]
        x = tf.matmul(x0e, s) + tf.reshape(b, [-1, 1]) + x
    return tf.squeeze(x, axis=2)


def cin_products(x0, hidden):
    """Recopt>CinProducts: x0 [B, F0, D], hidden [B, H, D] -> [B*D, F0*H],
    row b*D + e, column i*H + j holding x0[b, i, e] * hidden[b, j, e]: the
    rows DeepCTR's CIN feeds its conv1d."""
    x0, hidden = tf.convert_to_tensor(x0), tf.convert_to_tensor(hidden)
    z = tf.einsum("bie,bje->beij", x0, hidden)
    return tf.reshape(z, [-1, x0.shape[1] * hidden.shape[1]])


def din_attention(query, keys, mask, weights, biases, activations, alphas, parts, softmax=False,
                  pad_value=0.0, weights_bf16=False, output="pooled"):
    """Recopt>DinAttention: the activation-unit MLP over the concatenation of
    `parts` (each of "q", "k", "q-k", "k-q", "q*k") per position, masked
    scores (pad_value where mask is False), optional softmax over T, weighted
    sum of keys (or, output="weights", the [B, T] weights themselves)."""
    keys = tf.convert_to_tensor(keys)
    q = tf.repeat(tf.expand_dims(query, 1), tf.shape(keys)[1], axis=1)
    blocks = {"q": q, "k": keys, "q-k": q - keys, "k-q": keys - q, "q*k": q * keys}
    feats = tf.concat([blocks[p] for p in parts], axis=-1)
    scores = fused_mlp(feats, weights, biases, activations, alphas, weights_bf16)[..., 0]   # [B, T]
    scores = tf.where(mask, scores, tf.cast(pad_value, scores.dtype))
    if softmax:
        scores = tf.nn.softmax(scores, axis=-1)
    if output == "weights":
        return scores
    return tf.reduce_sum(scores[..., None] * keys, axis=1)


def gru(x, initial_state, kernel, recurrent_kernel, input_bias, recurrent_bias, reset_after=True,
        time_major=False, weights_bf16=False, mask=None, attention=None, attention_mode="update"):
    """Recopt>GRU: a Keras GRU cell (gates z, r, h) unrolled over T; returns
    (every step's output in x's layout, the last state). Where mask [B, T]
    (x's layout) is False the state is kept and the output repeats the last
    unmasked output, zeros before the first (Keras' masked loop). attention
    [B, T] makes it DIEN's AUGRU: z becomes 1 - a * (1 - z) ("update") or
    (1 - a) * z ("keep")."""
    def rounded(w):
        w = tf.convert_to_tensor(w)
        return tf.cast(tf.cast(w, tf.bfloat16), tf.float32) if weights_bf16 else w
    kernel, recurrent_kernel = rounded(kernel), rounded(recurrent_kernel)
    xs = tf.convert_to_tensor(x)
    if not time_major:
        xs = tf.transpose(xs, [1, 0, 2])
    units = recurrent_kernel.shape[0]
    h, states = tf.convert_to_tensor(initial_state), []
    if mask is not None:
        mask = tf.convert_to_tensor(mask) if time_major else tf.transpose(mask)
        out = tf.zeros_like(h)
    if attention is not None:
        attention = tf.convert_to_tensor(attention) if time_major else tf.transpose(attention)
    for t in range(xs.shape[0]):
        h_prev = h
        x_z, x_r, x_h = tf.split(tf.matmul(xs[t], kernel) + input_bias, 3, axis=-1)
        if reset_after:
            r_z, r_r, r_h = tf.split(tf.matmul(h, recurrent_kernel) + recurrent_bias, 3, axis=-1)
        else:
            r_z, r_r = tf.split(tf.matmul(h, recurrent_kernel[:, :2 * units]) + recurrent_bias[:2 * units], 2, -1)
        z, r = tf.sigmoid(x_z + r_z), tf.sigmoid(x_r + r_r)
        if reset_after:
            cand = tf.tanh(x_h + r * r_h)
        else:
            cand = tf.tanh(x_h + recurrent_bias[2 * units:] + tf.matmul(r * h, recurrent_kernel[:, 2 * units:]))
        if attention is not None:
            a = attention[t][:, None]
            z = 1 - a * (1 - z) if attention_mode == "update" else (1 - a) * z
        h = z * h + (1 - z) * cand
        if mask is None:
            states.append(h)
            continue
        m = mask[t][:, None]
        h, out = tf.where(m, h, h_prev), tf.where(m, h, out)
        states.append(out)
    seq = tf.stack(states) if states else tf.zeros([0, xs.shape[1], units])
    return (seq if time_major else tf.transpose(seq, [1, 0, 2])), h


def multi_head_attention(query, key, value, query_kernel, query_bias, key_kernel, key_bias, value_kernel,
                         value_bias, output_kernel, output_bias, num_heads, key_dim, value_dim, scale,
                         mask=None, mask_mode="select", mask_value=0.0, zero_masked=False, weights_bf16=False,
                         causal=False):
    """Recopt>MultiHeadAttention: Keras' MultiHeadAttention at inference with
    2-D kernels (heads side by side in the columns). mask [B, T or 1, S]
    (or [B, N, T or 1, S], one per head):
    where False the scaled score becomes mask_value ("select") or has it
    added ("add"); causal also masks key step s > query step t; softmax
    over S; zero_masked then zeroes the masked weights."""
    def rounded(w):
        w = tf.convert_to_tensor(w)
        return tf.cast(tf.cast(w, tf.bfloat16), tf.float32) if weights_bf16 else w

    def heads(x, kernel, bias, width):   # [B, L, d] -> [B, N, L, width]
        y = tf.tensordot(x, rounded(kernel), axes=1) + bias
        y = tf.reshape(y, tf.concat([tf.shape(y)[:2], [num_heads, width]], 0))
        return tf.transpose(y, [0, 2, 1, 3])
    q = heads(query, query_kernel, query_bias, key_dim)
    k = heads(key, key_kernel, key_bias, key_dim)
    v = heads(value, value_kernel, value_bias, value_dim)
    scores = tf.matmul(q, k, transpose_b=True) * scale
    if causal:
        lower = tf.linalg.band_part(tf.ones(tf.shape(scores)[2:], tf.bool), -1, 0)[None]
        mask = lower if mask is None else tf.logical_and(tf.convert_to_tensor(mask), lower)
    if mask is not None:
        keep = tf.convert_to_tensor(mask)
        keep = keep if keep.shape.rank == 4 else tf.expand_dims(keep, 1)   # [B, N, T, S]: a mask per head
        masked = scores + mask_value if mask_mode == "add" else tf.fill(tf.shape(scores), mask_value)
        scores = tf.where(keep, scores, masked)
    weights = tf.nn.softmax(scores, axis=-1)
    if mask is not None and zero_masked:
        weights = tf.where(keep, weights, 0.0)
    ctx = tf.transpose(tf.matmul(weights, v), [0, 2, 1, 3])
    ctx = tf.reshape(ctx, tf.concat([tf.shape(ctx)[:2], [num_heads * value_dim]], 0))
    return tf.tensordot(ctx, rounded(output_kernel), axes=1) + output_bias
