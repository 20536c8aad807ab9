"""Recopt>GRU against a real Keras GRU layer (what the pass replaces) and
against its pure-TF reference (layouts, initial state, bf16, edge cases)."""
import numpy as np
import pytest
import tensorflow as tf

from tf_recopt.ops import reference

RNG = np.random.default_rng(21)


def _weights(d, units, reset_after=True):
    kernel = (RNG.standard_normal((d, 3 * units)) / np.sqrt(d)).astype(np.float32)
    recurrent = (RNG.standard_normal((units, 3 * units)) / np.sqrt(units)).astype(np.float32)
    biases = (RNG.standard_normal((2, 3 * units)) * 0.3).astype(np.float32)
    if not reset_after:
        biases[1] = 0.0
    return kernel, recurrent, biases[0], biases[1]


def _gru(ops, x, h0, w, reset_after=True, time_major=False, bf16=False, mask=None, att=None, mode="update"):
    return ops.recopt_gru(x, h0, *w, [] if mask is None else [mask], [] if att is None else [att],
                          reset_after=reset_after, time_major=time_major, weights_bf16=bf16, attention_mode=mode)


def _check(ops, x, h0, w, reset_after=True, time_major=False, bf16=False, tol=2e-5, mask=None, att=None,
           mode="update"):
    seq, last = _gru(ops, x, h0, w, reset_after, time_major, bf16, mask, att, mode)
    want_seq, want_last = reference.gru(x, h0, *w, reset_after=reset_after, time_major=time_major,
                                        weights_bf16=bf16, mask=mask, attention=att, attention_mode=mode)
    assert seq.shape == want_seq.shape and last.shape == want_last.shape
    np.testing.assert_allclose(seq.numpy(), want_seq.numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(last.numpy(), want_last.numpy(), rtol=tol, atol=tol)
    return seq.numpy(), last.numpy()


def _keras_gru(units, d, reset_after, weights):
    import keras
    layer = keras.layers.GRU(units, return_sequences=True, return_state=True, reset_after=reset_after)
    layer.build((None, None, d))
    kernel, recurrent, b_in, b_rec = weights
    layer.set_weights([kernel, recurrent, np.stack([b_in, b_rec]) if reset_after else b_in])
    return layer


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 512])
def test_matches_keras_gru_layer(ops, reset_after, batch):
    d, units, steps = 32, 32, 50
    w = _weights(d, units, reset_after)
    x = RNG.standard_normal((batch, steps, d)).astype(np.float32)
    layer = _keras_gru(units, d, reset_after, w)
    want_seq, want_last = layer(x)
    seq, last = _gru(ops, x, np.zeros((batch, units), np.float32), w, reset_after)
    np.testing.assert_allclose(seq.numpy(), np.asarray(want_seq), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(last.numpy(), np.asarray(want_last), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 7, 300])
def test_masked_matches_keras_gru_layer(ops, reset_after, batch):
    d, units, steps = 16, 12, 20
    w = _weights(d, units, reset_after)
    x = RNG.standard_normal((batch, steps, d)).astype(np.float32)
    mask = RNG.random((batch, steps)) < 0.7
    mask[0, :3] = False          # output zeros until the first unmasked step
    if batch > 1:
        mask[1] = False          # a row that never steps: zeros out, h0 kept
    want_seq, want_last = _keras_gru(units, d, reset_after, w)(x, mask=mask)
    seq, last = _gru(ops, x, np.zeros((batch, units), np.float32), w, reset_after, mask=mask)
    np.testing.assert_allclose(seq.numpy(), np.asarray(want_seq), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(last.numpy(), np.asarray(want_last), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("time_major", [False, True])
def test_masked_with_initial_state(ops, time_major):
    w = _weights(5, 4)
    shape = (9, 6) if time_major else (6, 9)
    x = RNG.standard_normal(shape + (5,)).astype(np.float32)
    mask = RNG.random(shape) < 0.5
    h0 = RNG.standard_normal((6, 4)).astype(np.float32)
    _check(ops, x, h0, w, time_major=time_major, mask=mask)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("d, units", [(1, 1), (5, 3), (16, 9), (33, 40), (64, 17)])
def test_widths_and_initial_state(ops, reset_after, d, units):
    w = _weights(d, units, reset_after)
    x = RNG.standard_normal((6, 11, d)).astype(np.float32)
    h0 = RNG.standard_normal((6, units)).astype(np.float32)
    _check(ops, x, h0, w, reset_after)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("batch", [1, 3, 300])
def test_time_major_layout(ops, reset_after, batch):
    w = _weights(8, 12, reset_after)
    x = RNG.standard_normal((9, batch, 8)).astype(np.float32)
    seq, _ = _check(ops, x, np.zeros((batch, 12), np.float32), w, reset_after, time_major=True)
    assert seq.shape == (9, batch, 12)


def test_long_sequence_many_rows_projects_per_step(ops):
    # 300 rows x 97 steps is above the project-every-step-at-once threshold.
    w = _weights(16, 24)
    x = RNG.standard_normal((300, 97, 16)).astype(np.float32)
    _check(ops, x, np.zeros((300, 24), np.float32), w, tol=5e-5)


def test_empty_batch_and_no_steps(ops):
    w = _weights(4, 5)
    seq, last = _gru(ops, np.zeros((0, 7, 4), np.float32), np.zeros((0, 5), np.float32), w)
    assert seq.shape == (0, 7, 5) and last.shape == (0, 5)
    h0 = RNG.standard_normal((3, 5)).astype(np.float32)
    seq, last = _gru(ops, np.zeros((3, 0, 4), np.float32), h0, w)
    assert seq.shape == (3, 0, 5)
    np.testing.assert_array_equal(last.numpy(), h0)


def test_bf16_weights(ops):
    w = _weights(32, 32)
    x = RNG.standard_normal((16, 20, 32)).astype(np.float32)
    _check(ops, x, np.zeros((16, 32), np.float32), w, bf16=True, tol=5e-5)
    fp32, _ = _gru(ops, x, np.zeros((16, 32), np.float32), w)
    bf16, _ = _gru(ops, x, np.zeros((16, 32), np.float32), w, bf16=True)
    assert np.abs(fp32.numpy() - bf16.numpy()).max() > 0  # the rounding really happened


def test_nan_stays_in_its_example(ops):
    w = _weights(6, 4)
    x = RNG.standard_normal((3, 5, 6)).astype(np.float32)
    x[1, 2, 0] = np.nan
    seq, _ = _check(ops, x, np.zeros((3, 4), np.float32), w)
    assert np.isnan(seq[1, 2:]).all() and not np.isnan(seq[1, :2]).any()
    assert not np.isnan(seq[[0, 2]]).any()


def test_saturated_gates(ops):
    w = _weights(4, 8)
    x = (RNG.standard_normal((5, 6, 4)) * 1e4).astype(np.float32)
    _check(ops, x, np.zeros((5, 8), np.float32), w)


def test_new_weights_are_repacked(ops):
    x = RNG.standard_normal((2, 4, 3)).astype(np.float32)
    h0 = np.zeros((2, 5), np.float32)
    w1, w2 = _weights(3, 5), _weights(3, 5)
    fn = tf.function(lambda k, r, bi, br: ops.recopt_gru(x, h0, k, r, bi, br, [], [])[1])
    for w in (w1, w2, w1):
        np.testing.assert_allclose(fn(*w).numpy(), reference.gru(x, h0, *w)[1].numpy(), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("args, message", [
    (dict(x=np.zeros((2, 3), np.float32)), "need x"),
    (dict(kernel=np.zeros((4, 14), np.float32)), "kernel \\[d, 3u\\]"),
    (dict(input_bias=np.zeros(16, np.float32)), "biases \\[3u\\]"),
    (dict(x=np.zeros((2, 3, 5), np.float32)), "do not fit a kernel of 4 inputs and 5 units"),
    (dict(initial_state=np.zeros((3, 5), np.float32)), "do not fit"),
    (dict(mask=[np.ones((2, 4), bool)]), "mask \\[2,4\\] does not match x"),
    (dict(attention=[np.ones((2, 3, 1), np.float32)]), "attention \\[2,3,1\\] does not match x"),
])
def test_bad_inputs_name_the_problem(ops, args, message):
    k, r, bi, br = _weights(4, 5)
    inputs = dict(x=np.zeros((2, 3, 4), np.float32), initial_state=np.zeros((2, 5), np.float32), kernel=k,
                  recurrent_kernel=r, input_bias=bi, recurrent_bias=br, mask=[], attention=[])
    inputs.update(args)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        ops.recopt_gru(**inputs)


# ---- AUGRU (DIEN): attention scores gate the update ------------------------

def _scores(shape):
    return RNG.random(shape).astype(np.float32)


def _augru_layer(units, d, mode, w):
    """The zoo's AUGRUCell in a Keras RNN, holding the op's weights. Its
    "update" gate is the candidate's weight 1 - z: the z block is negated."""
    import keras
    from tf_recopt.zoo.layers import AUGRUCell
    layer = keras.layers.RNN(AUGRUCell(units, mode=mode), return_sequences=True, return_state=True)
    layer.build((None, None, d + 1))
    sign = np.concatenate([np.full(units, -1.0 if mode == "update" else 1.0), np.ones(2 * units)]).astype(np.float32)
    kernel, recurrent, b_in, b_rec = w
    layer.set_weights([kernel * sign, recurrent * sign, np.stack([b_in, b_rec]) * sign])
    return layer


@pytest.mark.parametrize("mode", ["update", "keep"])
@pytest.mark.parametrize("batch", [1, 7, 300])
@pytest.mark.parametrize("masked", [False, True])
def test_augru_matches_keras_cell(ops, mode, batch, masked):
    d, units, steps = 12, 10, 20
    w = _weights(d, units)
    x = RNG.standard_normal((batch, steps, d)).astype(np.float32)
    att = _scores((batch, steps))
    mask = None
    if masked:
        mask = RNG.random((batch, steps)) < 0.7
        mask[0, :4] = False
    layer = _augru_layer(units, d, mode, w)
    want_seq, want_last = layer(np.concatenate([x, att[..., None]], -1), mask=mask)
    seq, last = _gru(ops, x, np.zeros((batch, units), np.float32), w, mask=mask, att=att, mode=mode)
    np.testing.assert_allclose(seq.numpy(), np.asarray(want_seq), rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(last.numpy(), np.asarray(want_last), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("mode", ["update", "keep"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("time_major", [False, True])
def test_augru_matches_reference(ops, mode, reset_after, time_major):
    w = _weights(6, 9, reset_after)
    shape = (8, 5) if time_major else (5, 8)
    x = RNG.standard_normal(shape + (6,)).astype(np.float32)
    h0 = RNG.standard_normal((5, 9)).astype(np.float32)
    _check(ops, x, h0, w, reset_after, time_major, att=_scores(shape), mode=mode)


@pytest.mark.parametrize("reset_after", [True, False])
def test_augru_score_limits(ops, reset_after):
    """update: a = 0 keeps the state, a = 1 is the plain GRU; keep: a = 0 is the plain GRU."""
    w = _weights(5, 7, reset_after)
    x = RNG.standard_normal((4, 6, 5)).astype(np.float32)
    h0 = RNG.standard_normal((4, 7)).astype(np.float32)
    zeros, ones = np.zeros((4, 6), np.float32), np.ones((4, 6), np.float32)
    plain, plain_last = (t.numpy() for t in _gru(ops, x, h0, w, reset_after))
    seq, last = _gru(ops, x, h0, w, reset_after, att=zeros, mode="update")
    np.testing.assert_array_equal(seq.numpy(), np.broadcast_to(h0[:, None], seq.shape))
    for att, mode in ((ones, "update"), (zeros, "keep")):
        seq, last = _gru(ops, x, h0, w, reset_after, att=att, mode=mode)
        np.testing.assert_allclose(seq.numpy(), plain, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(last.numpy(), plain_last, rtol=1e-6, atol=1e-6)


def test_augru_nan_score_stays_in_its_example(ops):
    w = _weights(4, 3)
    x = RNG.standard_normal((3, 5, 4)).astype(np.float32)
    att = _scores((3, 5))
    att[2, 1] = np.nan
    seq, _ = _check(ops, x, np.zeros((3, 3), np.float32), w, att=att, mode="keep")
    assert np.isnan(seq[2, 1:]).all() and not np.isnan(seq[2, :1]).any() and not np.isnan(seq[:2]).any()


def test_augru_empty_batch_and_no_steps(ops):
    w = _weights(4, 5)
    seq, last = _gru(ops, np.zeros((0, 7, 4), np.float32), np.zeros((0, 5), np.float32), w,
                     att=np.zeros((0, 7), np.float32))
    assert seq.shape == (0, 7, 5) and last.shape == (0, 5)
    h0 = RNG.standard_normal((3, 5)).astype(np.float32)
    seq, last = _gru(ops, np.zeros((3, 0, 4), np.float32), h0, w, att=np.zeros((3, 0), np.float32))
    assert seq.shape == (3, 0, 5)
    np.testing.assert_array_equal(last.numpy(), h0)
