"""The learned/forgotten rule (gdc/forgetting.py): a hand-written truth table, the same answers on numpy and jax
arrays, and numba's copy of it in gdc/scoring/fast.py held equal to it on ties, ulp neighbours of the thresholds,
hysteresis, NaN and random matrices."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc.forgetting import transition
from gdc.scoring import fast

F32 = np.float32
NAN = float("nan")

# (was learned, loss) -> (learned now, learn event, forget event) for eps_low = 0.5, eps_high = 1.5, by hand.
LOSS_TABLE = [
    (False, 0.25, True, True, False),  # below eps_low: learned
    (False, 0.5, False, False, False),  # tie at eps_low: strict <, not learned
    (False, 1.0, False, False, False),  # between the thresholds: state kept
    (False, 2.0, False, False, False),  # not learned cannot be forgotten
    (False, NAN, False, False, False),  # unobserved: state kept
    (True, 0.25, True, False, False),  # learned stays learned, no second learn event
    (True, 1.0, True, False, False),  # hysteresis: between the thresholds keeps "learned"
    (True, 1.5, True, False, False),  # tie at eps_high: strict >, not forgotten
    (True, 2.0, False, False, True),  # above eps_high: forgotten
    (True, NAN, True, False, False),  # unobserved: state kept
]
# (was learned, accuracy) -> (...) for acc_learn = 0.75, acc_forget = 0.5, by hand.
ACC_TABLE = [
    (False, 0.75, True, True, False),  # tie at acc_learn: >=, learned
    (False, 0.5, False, False, False),
    (False, NAN, False, False, False),
    (True, 0.5, True, False, False),  # tie at acc_forget: < is strict, kept
    (True, 0.25, False, False, True),
    (True, NAN, True, False, False),
]


def _columns(table):
    was, x, *want = (np.array(c) for c in zip(*table, strict=True))
    return was.astype(bool), x.astype(F32), [w.astype(bool) for w in want]


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_loss_rule_by_hand(xp):
    was, loss, want = _columns(LOSS_TABLE)
    got = transition(xp.asarray(was), xp.asarray(loss), 0.5, 1.5)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)


@pytest.mark.parametrize("xp", [np, jnp], ids=["numpy", "jax"])
def test_accuracy_rule_by_hand(xp):
    was, acc, want = _columns(ACC_TABLE)
    loss = xp.zeros(acc.shape, F32)  # the accuracy criterion does not read the loss
    got = transition(xp.asarray(was), loss, 9.0, 9.0, criterion="accuracy", acc=xp.asarray(acc), acc_learn=0.75,
                     acc_forget=0.5)  # fmt: skip
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)
    with pytest.raises(ValueError, match="criterion"):
        transition(was, loss, 1.0, 1.0, criterion="margin")


def test_rule_under_jit_and_in_the_losses_dtype():
    was, loss, want = _columns(LOSS_TABLE)
    got = jax.jit(lambda w, x: transition(w, x, 0.5, 1.5))(was, loss)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), w)
    # f32(0.1) is above the float64 0.1: compared in float64 a learned example would be forgotten, in float32 (the
    # losses' dtype; a Python float threshold is weakly typed) it is a tie and kept.
    for xp in (np, jnp):
        learned, _, forget = transition(xp.ones(1, bool), xp.asarray([0.1], F32), 0.1, 0.1)
        assert bool(learned[0]) and not bool(forget[0])


def _edge_values(thresholds, dtype):
    """Each threshold, its two ulp neighbours in ``dtype``, values far on both sides and NaN."""
    t = np.asarray(thresholds, dtype)
    near = [t, np.nextafter(t, dtype(-np.inf)), np.nextafter(t, dtype(np.inf))]
    return np.unique(np.concatenate([*near, np.asarray([-1.0, 0.0, 100.0, np.inf], dtype)])).tolist() + [np.nan]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_copy_equals_the_rule_on_every_edge_case(dtype):
    pairs = [(1.0, 1.0), (0.75, 1.25), (0.1, 0.1), (0.3, 0.7)]  # single threshold, hysteresis, inexact in binary
    for low, high in pairs:
        low, high = dtype(low), dtype(high)
        for x in _edge_values([low, high], dtype):
            for was in (False, True):
                want = transition(np.bool_(was), dtype(x), low, high)
                got = fast._transition(np.bool_(was), dtype(x), low, high)
                assert tuple(map(bool, got)) == tuple(map(bool, want)), (was, x, low, high)


def _reference(loss_ExN, low_N, high_N):
    """``fast.machine``'s outputs from a loop over checkpoints that applies ``transition`` to each row."""
    n = loss_ExN.shape[1]
    out = {"forget_N": np.zeros(n, np.int32), "learn_N": np.zeros(n, np.int32), "learned_N": np.zeros(n, bool)}
    out |= {"observed_N": np.zeros(n, np.int32), "first_learned_N": np.full(n, -1, np.int32)}
    for t, x_N in enumerate(loss_ExN):
        out["learned_N"], learn_N, forget_N = transition(out["learned_N"], x_N, low_N, high_N)
        out["first_learned_N"][learn_N & (out["first_learned_N"] < 0)] = t
        out["learn_N"] += learn_N
        out["forget_N"] += forget_N
        out["observed_N"] += ~np.isnan(x_N)
    return out


def _matrices(dtype):
    rng = np.random.default_rng(0)
    # Every column's thresholds are two of the edge values, and its losses are drawn from the edge values: ties,
    # ulp neighbours, the hysteresis band and NaN in every order.
    edges = _edge_values([0.75, 1.0, 1.25], dtype)
    edge_ExN = rng.choice(np.asarray(edges, dtype), (17, 3000))
    cut = np.sort(rng.choice(np.asarray([0.75, 1.0, 1.25], dtype), (2, 3000)), axis=0)
    yield "edges", edge_ExN, cut[0], cut[1]
    smooth_ExN = rng.gamma(2.0, 0.5, (23, 5000)).astype(dtype)
    smooth_ExN[rng.random(smooth_ExN.shape) < 0.15] = np.nan
    low_N = smooth_ExN[3].copy()  # thresholds equal to some of the column's own losses
    low_N[np.isnan(low_N)] = 1.0
    yield "random", smooth_ExN, low_N, low_N + rng.choice(np.asarray([0.0, 0.25, 1.0], dtype), 5000)
    yield "random single", smooth_ExN, np.full(5000, 0.9, dtype), np.full(5000, 0.9, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_kernels_equal_the_rule_on_matrices(dtype):
    for name, loss_ExN, low_N, high_N in _matrices(dtype):
        want = _reference(loss_ExN, low_N, high_N)
        got_machine = fast.machine(loss_ExN, low_N, high_N)
        got_fused = fast.scores(loss_ExN, 2, low_N, high_N, np.asarray([1.0, 0.5], dtype))
        assert want["forget_N"].sum() > 0 and want["learn_N"].sum() > want["forget_N"].sum(), name  # not vacuous
        for k, w in want.items():
            np.testing.assert_array_equal(got_machine[k], w, err_msg=f"machine {name} {k}")
            np.testing.assert_array_equal(got_fused[k], w, err_msg=f"scores {name} {k}")
