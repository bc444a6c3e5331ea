"""ExampleTracker vs a numpy reference of its spec; invariants, hand-checked trajectories, shardings.

``update_np`` below is written from the module docstring of ``gdc/tracker.py`` (not from the jax code) and is
the spec the jitted ``update`` must match.
"""

import collections
import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc import sharding
from gdc import tracker as tracker_lib
from gdc.tracker import ExampleTracker, TrackerConfig

INT_BOOL_FIELDS = (
    "seen_N",
    "count_early_N",
    "last_epoch_N",
    "learned_N",
    "learn_N",
    "forget_N",
    "first_learned_step_N",
)

CONFIGS = {
    # Thresholds exactly representable in f32: losses drawn equal to them test the strict inequalities.
    "loss_hysteresis": TrackerConfig(criterion="loss", eps_low=0.75, eps_high=1.25, early_epochs=2),
    "loss_single": TrackerConfig(criterion="loss", eps_low=1.0, eps_high=1.0, early_epochs=2),
    "accuracy_single": TrackerConfig(criterion="accuracy", acc_learn=1.0, acc_forget=1.0, early_epochs=1),
    "accuracy_hysteresis": TrackerConfig(criterion="accuracy", acc_learn=0.75, acc_forget=0.5, early_epochs=3),
}


# ------------------------------------------------------------------------------------------------------------
# The numpy reference: the spec, written with plain loops.
# ------------------------------------------------------------------------------------------------------------
def init_np(n: int) -> dict[str, np.ndarray]:
    """The initial state: nothing seen, every example "not learned"."""
    return {
        "seen_N": np.zeros(n, np.int32),
        "loss_sum_early_N": np.zeros(n, np.float32),
        "count_early_N": np.zeros(n, np.int32),
        "last_loss_N": np.full(n, np.nan, np.float32),
        "last_epoch_N": np.full(n, -1, np.int32),
        "learned_N": np.zeros(n, bool),
        "learn_N": np.zeros(n, np.int32),
        "forget_N": np.zeros(n, np.int32),
        "first_learned_step_N": np.full(n, -1, np.int32),
    }


def update_np(
    state: dict[str, np.ndarray],
    idx_B: np.ndarray,
    loss_B: np.ndarray,
    acc_B: np.ndarray,
    mask_B: np.ndarray,
    step: int,
    epoch: int,
    cfg: TrackerConfig,
) -> dict[str, np.ndarray]:
    """One batch folded into ``state`` (a new dict; the input is not modified).

    Thresholds are compared in float32, the dtype of the losses.
    """
    new = {k: v.copy() for k, v in state.items()}
    n = len(new["seen_N"])

    # Rows with mask False or an id outside [0, N) are ignored.
    valid_rows = [b for b in range(len(idx_B)) if mask_B[b] and 0 <= int(idx_B[b]) < n]

    # seen and the early-loss sums count every valid occurrence.
    for b in valid_rows:
        i = int(idx_B[b])
        new["seen_N"][i] += 1
        if epoch < cfg.early_epochs:
            new["loss_sum_early_N"][i] = np.float32(new["loss_sum_early_N"][i] + np.float32(loss_B[b]))
            new["count_early_N"][i] += 1

    # The state machine and the last-value fields use each id's last valid occurrence in the batch.
    last_row = {}
    for b in valid_rows:
        last_row[int(idx_B[b])] = b
    for i, b in last_row.items():
        loss = np.float32(loss_B[b])
        acc = np.float32(acc_B[b])
        new["last_loss_N"][i] = loss
        new["last_epoch_N"][i] = epoch
        if cfg.criterion == "loss":
            becomes_learned = loss < np.float32(cfg.eps_low)
            becomes_forgotten = loss > np.float32(cfg.eps_high)
        else:
            becomes_learned = acc >= np.float32(cfg.acc_learn)
            becomes_forgotten = acc < np.float32(cfg.acc_forget)
        if not state["learned_N"][i] and becomes_learned:
            new["learned_N"][i] = True
            new["learn_N"][i] += 1
            if new["first_learned_step_N"][i] == -1:
                new["first_learned_step_N"][i] = step
        elif state["learned_N"][i] and becomes_forgotten:
            new["learned_N"][i] = False
            new["forget_N"][i] += 1
    return new


# ------------------------------------------------------------------------------------------------------------
# Helpers.
# ------------------------------------------------------------------------------------------------------------
@functools.cache
def _jit_update(cfg: TrackerConfig, unique: bool = False):
    """The jitted update with ``cfg`` bound (one compile per config, batch shape and tracker layout)."""
    return jax.jit(functools.partial(tracker_lib.update, cfg=cfg, unique=unique))


class _Folder:
    """Folds a deferred tracker as late as the contract allows: before an id would get a record past its last slot
    (with one slot: a second pending record), and numbers each batch row's occurrence since the last fold."""

    def __init__(self, cfg: TrackerConfig, n: int, tracker_sh=None, slots: int = 1):
        self.fold = jax.jit(
            functools.partial(tracker_lib.fold, cfg=cfg), in_shardings=tracker_sh, out_shardings=tracker_sh
        )
        self.n, self.slots, self.counts, self.folds = n, slots, collections.Counter(), 0

    def before(self, tracker, idx_B, mask_B):
        """Returns (tracker, occ_B): folded if needed, and each row's occurrence number (0 on ignored rows)."""
        for _ in range(2):
            counts, occ_B = self.counts.copy(), np.zeros(len(idx_B), np.int32)
            for j, (i, m) in enumerate(zip(idx_B, mask_B, strict=True)):
                if m and 0 <= i < self.n:
                    occ_B[j], counts[int(i)] = counts[int(i)], counts[int(i)] + 1
            if occ_B.max() < self.slots:
                break
            tracker, self.counts = self.fold(tracker), collections.Counter()
            self.folds += 1
        assert occ_B.max() < self.slots, "an id occurs in one batch more often than the tracker has slots"
        self.counts = counts
        return tracker, occ_B

    def now(self, tracker):
        self.counts = collections.Counter()
        return self.fold(tracker)


def _call(update_fn, tracker, idx_B, loss_B, acc_B, mask_B, step, epoch, **kw):
    return update_fn(
        tracker,
        jnp.asarray(idx_B, jnp.int32),
        jnp.asarray(loss_B, jnp.float32),
        jnp.asarray(acc_B, jnp.float32),
        jnp.asarray(mask_B, jnp.bool_),
        jnp.asarray(step, jnp.int32),
        jnp.asarray(epoch, jnp.int32),
        **kw,
    )


def _random_batch(rng, n, cfg, *, b, duplicates):
    """One batch of B rows: real rows, padding (mask False, id N, NaN loss) and rows the tracker must ignore.

    Returns (idx_B, loss_B, acc_B, mask_B, has_duplicates).
    """
    num_pad = int(rng.integers(0, 6))
    k = b - num_pad
    if duplicates and rng.random() < 0.6:
        idx_K = rng.integers(0, n, k)
        if len(np.unique(idx_K)) == k:
            idx_K[1] = idx_K[0]
    else:
        idx_K = rng.choice(n, k, replace=False)
    loss_K = rng.uniform(0.0, 2.0, k).astype(np.float32)
    # Losses exactly at a threshold (strict inequalities: neither learned nor forgotten by them).
    tie_K = rng.random(k) < 0.1
    loss_K[tie_K] = rng.choice(np.float32([cfg.eps_low, cfg.eps_high]), tie_K.sum())
    acc_K = rng.choice(np.float32([0.0, 0.25, 0.5, 0.75, 1.0]), k)
    # Copies of one id inside a batch share parameters and randomness, hence their loss and accuracy.
    _, first_K, inverse_K = np.unique(idx_K, return_index=True, return_inverse=True)
    loss_K = loss_K[first_K][inverse_K]
    acc_K = acc_K[first_K][inverse_K]
    has_duplicates = len(first_K) < k

    idx_P = np.full(num_pad, n)
    mask_P = np.zeros(num_pad, bool)
    # Some padding slots become rows that must be ignored all the same: mask True with an id outside [0, N)
    # (including ids in the capacity slots N..capacity-1), or mask False with a valid id.
    for j in range(num_pad):
        kind = rng.integers(0, 4)
        if kind == 1:
            idx_P[j] = rng.choice([-1, n, n + 2, 10_000])
            mask_P[j] = True
        elif kind == 2:
            idx_P[j] = rng.integers(0, n)
    loss_P = np.full(num_pad, np.nan, np.float32)
    acc_P = np.full(num_pad, np.nan, np.float32)

    perm_B = rng.permutation(b)
    idx_B = np.concatenate([idx_K, idx_P]).astype(np.int32)[perm_B]
    loss_B = np.concatenate([loss_K, loss_P])[perm_B]
    acc_B = np.concatenate([acc_K, acc_P])[perm_B]
    mask_B = np.concatenate([np.ones(k, bool), mask_P])[perm_B]
    return idx_B, loss_B, acc_B, mask_B, has_duplicates


def _assert_invariants(fields: dict[str, np.ndarray], num_valid: int) -> None:
    assert fields["seen_N"].sum() == num_valid
    assert (fields["forget_N"] <= fields["learn_N"]).all()
    diff_N = fields["learn_N"] - fields["forget_N"]
    assert np.isin(diff_N, [0, 1]).all()
    np.testing.assert_array_equal(diff_N, fields["learned_N"].astype(np.int32))
    # Learned at some point <=> a first learned step.
    np.testing.assert_array_equal(fields["learn_N"] > 0, fields["first_learned_step_N"] >= 0)
    np.testing.assert_array_equal(fields["seen_N"] > 0, fields["last_epoch_N"] >= 0)


def _assert_capacity_untouched(tracker: ExampleTracker) -> None:
    """Slots N..capacity-1 (leading axis of every on-device array) still hold their initial values."""
    n, cap = tracker.num_examples, tracker.capacity
    copies = 1 if tracker.pending is None else tracker.pending.shape[0] // cap  # pending: copies x capacity rows
    deferred = tracker.pending is not None
    fresh = ExampleTracker.create(n, multiple_of=cap, deferred=deferred, copies=copies, slots=tracker.slots)
    assert fresh.capacity == cap > n
    leaves, fresh_leaves = jax.tree.leaves(jax.device_get(tracker)), jax.tree.leaves(fresh)
    assert len(leaves) == len(fresh_leaves) > 0
    for leaf, fresh_leaf in zip(leaves, fresh_leaves, strict=True):
        assert leaf.shape[0] % cap == 0
        leaf, fresh_leaf = np.asarray(leaf).reshape(-1, cap, *leaf.shape[1:]), np.asarray(fresh_leaf)
        np.testing.assert_array_equal(leaf[:, n:], fresh_leaf.reshape(leaf.shape)[:, n:])


def _assert_matches(got: dict[str, np.ndarray], want: dict[str, np.ndarray], *, sum_rtol: float) -> None:
    assert got.keys() == want.keys()
    for name in INT_BOOL_FIELDS:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    np.testing.assert_array_equal(got["last_loss_N"], want["last_loss_N"], err_msg="last_loss_N")
    if sum_rtol == 0.0:
        np.testing.assert_array_equal(got["loss_sum_early_N"], want["loss_sum_early_N"])
    else:
        np.testing.assert_allclose(got["loss_sum_early_N"], want["loss_sum_early_N"], rtol=sum_rtol)


# ------------------------------------------------------------------------------------------------------------
# Jitted update vs the numpy reference on random sequences.
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["unique_fast_path", "deferred", "unique_ids", "duplicates", "deferred_slots"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_update_matches_numpy_reference(seed, cfg_name, mode):
    """Modes: ``unique=True`` (the engine's path without up-sampling) on batches without repeated ids; the same
    deferred (records, folded only before an id would be recorded twice and before each read); the general path on
    batches without repeated ids; the general path with repeated ids inside some batches; the same repeated ids
    deferred into 4 record slots by occurrence number (the engine's up-sampled path), which must equal the general
    path bit for bit (the reference sums repeated early losses in another order, hence its rtol)."""
    cfg = CONFIGS[cfg_name]
    cfg.validate()
    duplicates, deferred = mode in ("duplicates", "deferred_slots"), mode.startswith("deferred")
    slots = 4 if mode == "deferred_slots" else 1
    n, b, steps_per_epoch, num_steps = 37, 16, 9, 36
    rng = np.random.default_rng(seed)
    update = _jit_update(cfg, unique=mode in ("unique_fast_path", "deferred"))
    tracker = ExampleTracker.create(n, multiple_of=8, deferred=deferred, slots=slots)
    immediate = ExampleTracker.create(n, multiple_of=8)  # the general path beside the slotted one
    folder = _Folder(cfg, n, slots=slots)
    assert tracker.capacity == 40 and tracker.slots == slots
    want = init_np(n)
    num_valid, steps_with_duplicates = 0, 0
    for step in range(num_steps):
        epoch = step // steps_per_epoch
        idx_B, loss_B, acc_B, mask_B, has_dup = _random_batch(rng, n, cfg, b=b, duplicates=duplicates)
        steps_with_duplicates += has_dup
        num_valid += int((mask_B & (idx_B >= 0) & (idx_B < n)).sum())
        batch = (idx_B, loss_B, acc_B, mask_B, step, epoch)
        if deferred:
            tracker, occ_B = folder.before(tracker, idx_B, mask_B)
            kw = {"occ_B": jnp.asarray(occ_B)} if slots > 1 else {}
            tracker = _call(update, tracker, *batch, **kw)
        else:
            tracker = _call(update, tracker, *batch)
        if slots > 1:
            immediate = _call(update, immediate, *batch)
        want = update_np(want, idx_B, loss_B, acc_B, mask_B, step, epoch, cfg)
        if step % 6 == 5 or step == num_steps - 1:
            if deferred:
                with pytest.raises(ValueError, match="not yet folded"):
                    tracker_lib.to_numpy(tracker)
                tracker = folder.now(tracker)
            got = tracker_lib.to_numpy(tracker)
            _assert_matches(got, want, sum_rtol=1e-6 if duplicates else 0.0)
            _assert_invariants(got, num_valid)
            if slots > 1:
                _assert_matches(got, tracker_lib.to_numpy(immediate), sum_rtol=0.0)
    _assert_capacity_untouched(tracker)
    assert (steps_with_duplicates > 0) == duplicates
    assert folder.folds > 0 if deferred else folder.folds == 0  # folds also happened between reads
    # The sequence exercised the machine: learn and forget events happened, in several epochs.
    assert want["learn_N"].sum() > 0 and want["forget_N"].sum() > 0
    assert len(np.unique(want["first_learned_step_N"][want["learn_N"] > 0])) > 1
    assert (want["count_early_N"] < want["seen_N"]).any() and want["count_early_N"].sum() > 0


def test_slots_fold_in_occurrence_order():
    """Hand-checked: an id's copies in three batches and two in one batch, recorded into slots by occurrence and
    folded once, give the per-step state machine and the per-batch sums of early losses."""
    cfg = TrackerConfig(eps_low=1.0, eps_high=1.0, early_epochs=1)
    tracker = ExampleTracker.create(3, multiple_of=1, deferred=True, slots=4)
    update = _jit_update(cfg)
    ones = np.ones(2, np.float32)
    # id 0: 0.5 (learned), 1.5 twice in one batch (forgotten once), 0.25 (learned again). id 1: 2.0 once. id 2: never.
    for step, (idx, loss, occ) in enumerate([([0, 1], [0.5, 2.0], [0, 0]), ([0, 0], [1.5, 1.5], [1, 2])]):
        tracker = _call(update, tracker, idx, loss, ones, [True, True], step, 0, occ_B=jnp.int32(occ))
    tracker = _call(update, tracker, [0, 2], [0.25, 9.0], ones, [True, False], 2, 0, occ_B=jnp.int32([3, 0]))
    with pytest.raises(ValueError, match="not yet folded"):
        tracker_lib.to_numpy(tracker)
    got = tracker_lib.to_numpy(tracker_lib.fold(tracker, cfg))
    np.testing.assert_array_equal(got["seen_N"], [4, 1, 0])
    np.testing.assert_array_equal(got["learn_N"], [2, 0, 0])
    np.testing.assert_array_equal(got["forget_N"], [1, 0, 0])
    np.testing.assert_array_equal(got["learned_N"], [True, False, False])
    np.testing.assert_array_equal(got["first_learned_step_N"], [0, -1, -1])
    np.testing.assert_array_equal(got["last_loss_N"], np.float32([0.25, 2.0, np.nan]))
    np.testing.assert_array_equal(got["loss_sum_early_N"], np.float32([0.5 + 3.0 + 0.25, 2.0, 0.0]))
    np.testing.assert_array_equal(got["count_early_N"], [4, 1, 0])
    with pytest.raises(ValueError, match="needs occ_B"):
        _call(update, tracker, [0, 1], [0.5, 0.5], ones, [True, True], 3, 0)
    one_slot = ExampleTracker.create(3, multiple_of=1, deferred=True)
    with pytest.raises(ValueError, match="unique=True"):
        _call(update, one_slot, [0, 0], [0.5, 0.5], ones, [True, True], 0, 0)


def test_loss_at_threshold_keeps_the_state():
    """A loss exactly at eps neither learns nor forgets (both rules are strict inequalities)."""
    cfg = CONFIGS["loss_single"]
    update = _jit_update(cfg)
    tracker = ExampleTracker.create(4, multiple_of=8)
    want = init_np(4)
    ones_B, all_B = np.ones(4, np.float32), np.ones(4, bool)
    for step, loss_B in enumerate([[0.5, 0.5, 1.5, 1.5], [1.0, 1.5, 1.0, 0.25]]):
        loss_B = np.float32(loss_B)
        tracker = _call(update, tracker, np.arange(4), loss_B, ones_B, all_B, step, 0)
        want = update_np(want, np.arange(4), loss_B, ones_B, all_B, step, 0, cfg)
    got = tracker_lib.to_numpy(tracker)
    _assert_matches(got, want, sum_rtol=0.0)
    np.testing.assert_array_equal(got["learned_N"], [True, False, False, True])
    np.testing.assert_array_equal(got["learn_N"], [1, 1, 0, 1])
    np.testing.assert_array_equal(got["forget_N"], [0, 1, 0, 0])
    np.testing.assert_array_equal(got["first_learned_step_N"], [0, 0, -1, 1])


def test_last_occurrence_in_batch_wins():
    """With unequal copies (the engine never makes them; the spec covers them), the last valid one wins."""
    cfg = CONFIGS["loss_single"]
    update = _jit_update(cfg)
    tracker = ExampleTracker.create(4, multiple_of=8)
    # id 1: learned copy, then unlearned copy. id 2: the reverse, then a masked copy that must not count.
    idx_B = [1, 2, 4, 1, 2, 2, 0, 4]
    loss_B = [0.5, 1.5, np.nan, 1.5, 0.5, 3.0, 0.25, np.nan]
    mask_B = [True, True, False, True, True, False, True, False]
    tracker = _call(update, tracker, idx_B, loss_B, np.zeros(8), mask_B, 7, 0)
    got = tracker_lib.to_numpy(tracker)
    want = update_np(init_np(4), np.array(idx_B), np.float32(loss_B), np.zeros(8), np.array(mask_B), 7, 0, cfg)
    _assert_matches(got, want, sum_rtol=0.0)
    np.testing.assert_array_equal(got["learned_N"], [True, False, True, False])
    np.testing.assert_array_equal(got["last_loss_N"], np.float32([0.25, 1.5, 0.5, np.nan]))
    np.testing.assert_array_equal(got["first_learned_step_N"], [7, -1, 7, -1])
    np.testing.assert_array_equal(got["seen_N"], [1, 2, 2, 0])
    np.testing.assert_array_equal(got["loss_sum_early_N"], np.float32([0.25, 2.0, 2.0, 0.0]))


# ------------------------------------------------------------------------------------------------------------
# Hand-built trajectories with known answers.
# ------------------------------------------------------------------------------------------------------------
def _run_trajectory(cfg: TrackerConfig, loss_T: np.ndarray, one_epoch_per_step: bool = True):
    """One example (id 0) fed one loss per step, alongside a padding row; returns its fields as scalars."""
    update = _jit_update(cfg)
    tracker = ExampleTracker.create(1, multiple_of=8)
    for t, loss in enumerate(loss_T):
        epoch = t if one_epoch_per_step else 0
        tracker = _call(update, tracker, [0, 1], [loss, np.nan], [0.0, np.nan], [True, False], t, epoch)
    return {k: v[0] for k, v in tracker_lib.to_numpy(tracker).items()}


HAND_LOSS_T = np.float32([2.0, 0.5, 1.5, 0.8, 0.9, 1.2])


def test_hand_trajectory_single_threshold():
    # eps = 1: 2.0 (no), 0.5 learn @1, 1.5 forget, 0.8 learn, 0.9 (stays), 1.2 forget.
    got = _run_trajectory(TrackerConfig(eps_low=1.0, eps_high=1.0, early_epochs=2), HAND_LOSS_T)
    assert got["learn_N"] == 2
    assert got["forget_N"] == 2
    assert not got["learned_N"]
    assert got["first_learned_step_N"] == 1
    assert got["seen_N"] == 6
    assert got["count_early_N"] == 2
    assert got["loss_sum_early_N"] == np.float32(2.5)
    assert got["last_loss_N"] == np.float32(1.2)
    assert got["last_epoch_N"] == 5


def test_hand_trajectory_hysteresis():
    # eps_low = 0.7, eps_high = 1.3: 2.0 (no), 0.5 learn @1, 1.5 forget, 0.8 and 0.9 are not < 0.7 (stay
    # forgotten), 1.2 is not > 1.3 (irrelevant while forgotten).
    got = _run_trajectory(TrackerConfig(eps_low=0.7, eps_high=1.3, early_epochs=2), HAND_LOSS_T)
    assert got["learn_N"] == 1
    assert got["forget_N"] == 1
    assert not got["learned_N"]
    assert got["first_learned_step_N"] == 1
    # Hysteresis keeps a learned example learned inside the band: 0.5, then 0.8..1.2 never forget.
    got = _run_trajectory(TrackerConfig(eps_low=0.7, eps_high=1.3), np.float32([2.0, 0.5, 0.8, 1.2, 0.9, 1.3]))
    assert (got["learn_N"], got["forget_N"], bool(got["learned_N"])) == (1, 0, True)
    # ... whereas the single threshold at 1.0 forgets at 1.2 and relearns at 0.9.
    got = _run_trajectory(TrackerConfig(eps_low=1.0, eps_high=1.0), np.float32([2.0, 0.5, 0.8, 1.2, 0.9, 1.3]))
    assert (got["learn_N"], got["forget_N"], bool(got["learned_N"])) == (2, 2, False)


def _raw_counts(loss_T: np.ndarray, eps: float) -> tuple[int, int]:
    """The paper's single-threshold counts from adjacent pairs, starting from "not learned" (L[-1] = +inf)."""
    prev_T = np.concatenate([[np.inf], loss_T[:-1]])
    learn = int(((prev_T > eps) & (loss_T < eps)).sum())
    forget = int(((prev_T < eps) & (loss_T > eps)).sum())
    return learn, forget


def test_single_threshold_equals_paper_count_without_ties():
    """eps_low == eps_high == eps: forget events == #{t: L[t-1] < eps and L[t] > eps}; learn events likewise.

    Exactly equal whenever no loss equals eps: then "learned after step t-1" is exactly "L[t-1] < eps". A loss
    exactly at eps leaves the machine in its state, so machine and pair count differ across ties (below).
    """
    eps = 1.0
    cfg = TrackerConfig(eps_low=eps, eps_high=eps)
    rng = np.random.default_rng(0)
    n, num_steps = 6, 120
    loss_TxN = rng.uniform(0.0, 2.0, (num_steps, n)).astype(np.float32)
    loss_TxN[0] = rng.uniform(1.1, 2.0, n)  # starts above eps
    assert not (loss_TxN == eps).any()
    update = _jit_update(cfg)
    tracker = ExampleTracker.create(n, multiple_of=8)
    for t in range(num_steps):
        tracker = _call(update, tracker, np.arange(n), loss_TxN[t], np.zeros(n), np.ones(n, bool), t, t // 10)
    got = tracker_lib.to_numpy(tracker)
    for i in range(n):
        learn, forget = _raw_counts(loss_TxN[:, i], eps)
        assert forget > 5
        assert (got["learn_N"][i], got["forget_N"][i]) == (learn, forget), i
        assert got["learned_N"][i] == (loss_TxN[-1, i] < eps)


def test_single_threshold_differs_from_pair_count_at_ties():
    eps = 1.0
    cfg = TrackerConfig(eps_low=eps, eps_high=eps)
    # Learned at 0.5, tie, then 1.5: the machine forgets (it was still learned); no adjacent pair crosses.
    loss_T = np.float32([0.5, 1.0, 1.5])
    got = _run_trajectory(cfg, loss_T)
    assert (got["learn_N"], got["forget_N"]) == (1, 1)
    assert _raw_counts(loss_T, eps) == (1, 0)
    # Mirror image: 1.5, tie, 0.5 learns in the machine; no adjacent pair crosses.
    loss_T = np.float32([1.5, 1.0, 0.5])
    got = _run_trajectory(cfg, loss_T)
    assert (got["learn_N"], got["forget_N"]) == (1, 0)
    assert _raw_counts(loss_T, eps) == (0, 0)


# ------------------------------------------------------------------------------------------------------------
# Sharding, epoch losses, retracing.
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("duplicates", [True, False])
def test_replicated_and_sharded_trackers_agree(duplicates):
    """Also the deferred records and fold (``+defer``) under each sharding: one slot without duplicates, 4 slots
    numbered by occurrence with them; all bit for bit equal to the replicated immediate update."""
    mesh = sharding.make_mesh()
    assert mesh.size == 8
    cfg = CONFIGS["loss_hysteresis"]
    n, b = 37, 16
    repl = sharding.replicated(mesh)
    batch_sh = sharding.batch_sharding(mesh)

    runs = {}
    # "data": XLA partitions the row gather/scatter; "data+mesh": the explicit shard_map update (all-gather of the
    # batch's ids and losses, each device writes its own rows), which the engine uses.
    modes = (("replicated", None), ("data", None), ("data+mesh", mesh))
    modes += (("replicated+defer", None), ("data+defer", None), ("data+mesh+defer", mesh))
    slots = 4 if duplicates else 1
    for mode, tracker_mesh in modes:
        tracker_sh = sharding.tracker_sharding(mesh, mode.split("+")[0])
        mode_cfg = dataclasses.replace(cfg, sharding=mode.split("+")[0])
        defer = mode.endswith("+defer")

        def upd(tracker, batch, step, epoch, mode_cfg=mode_cfg, tracker_mesh=tracker_mesh):
            return tracker_lib.update(
                tracker,
                *(batch[k] for k in ("index", "loss", "acc", "mask")),
                step,
                epoch,
                mode_cfg,
                unique=not duplicates,
                mesh=tracker_mesh,
                occ_B=batch["occ"],
            )

        update = jax.jit(upd, in_shardings=(tracker_sh, batch_sh, repl, repl), out_shardings=tracker_sh)
        # The engine's sharded deferred tracker records into per-device copies of the pending rows.
        copies = mesh.size if defer and tracker_mesh is not None and mode.startswith("data") else 1
        tracker = ExampleTracker.create(n, multiple_of=mesh.size, deferred=defer, copies=copies, slots=slots)
        tracker = sharding.put_tree(tracker, tracker_sh)
        folder = _Folder(mode_cfg, n, tracker_sh, slots)
        want = init_np(n)
        rng = np.random.default_rng(5)
        with jax.set_mesh(mesh):
            for step in range(30):
                epoch = step // 8
                idx_B, loss_B, acc_B, mask_B, _ = _random_batch(rng, n, cfg, b=b, duplicates=duplicates)
                if defer:
                    tracker, occ_B = folder.before(tracker, idx_B, mask_B)
                else:
                    occ_B = np.zeros_like(idx_B)
                batch = {"index": idx_B, "loss": loss_B, "acc": acc_B, "mask": mask_B, "occ": occ_B}
                tracker = update(tracker, sharding.put_batch(batch, mesh), np.int32(step), np.int32(epoch))
                want = update_np(want, idx_B, loss_B, acc_B, mask_B, step, epoch, cfg)
            if defer:
                tracker = folder.now(tracker)
                assert folder.folds > 0
        for leaf in jax.tree.leaves(tracker):
            assert leaf.sharding.spec == tracker_sh.spec
        assert update._cache_size() == 1
        runs[mode] = tracker_lib.to_numpy(tracker)
        _assert_matches(runs[mode], want, sum_rtol=1e-6)
        _assert_capacity_untouched(tracker)
    assert jax.sharding.PartitionSpec("data") == sharding.tracker_sharding(mesh, "data").spec
    for mode in runs:
        for name, value in runs["replicated"].items():
            np.testing.assert_array_equal(value, runs[mode][name], err_msg=f"{mode}: {name}")


def test_epoch_losses():
    cfg = TrackerConfig()
    update = _jit_update(cfg)
    n = 6
    tracker = ExampleTracker.create(n, multiple_of=8)
    # Epoch 0: everyone once.
    tracker = _call(update, tracker, np.arange(6), [0.5, 1.5, 0.25, 2.0, 0.75, 3.0], np.zeros(6), [True] * 6, 0, 0)
    snapshot_0 = tracker_lib.to_numpy(tracker)
    e0 = tracker_lib.epoch_losses(snapshot_0, 0)
    assert e0.dtype == np.float32
    np.testing.assert_array_equal(e0, np.float32([0.5, 1.5, 0.25, 2.0, 0.75, 3.0]))
    np.testing.assert_array_equal(tracker_lib.epoch_losses(snapshot_0, 1), np.full(6, np.nan, np.float32))
    # Epoch 1: ids 0 and 2 (id 2 twice: the later step's loss counts), id 5 only as padding; rest not seen.
    tracker = _call(update, tracker, [0, 2, 6, 5], [1.25, 0.125, np.nan, 9.0], np.zeros(4), [1, 1, 0, 0], 1, 1)
    tracker = _call(update, tracker, [2, 6], [0.375, np.nan], np.zeros(2), [True, False], 2, 1)
    snapshot_1 = tracker_lib.to_numpy(tracker)
    e1 = tracker_lib.epoch_losses(snapshot_1, 1)
    assert e1.dtype == np.float32
    np.testing.assert_array_equal(e1, np.float32([1.25, np.nan, 0.375, np.nan, np.nan, np.nan]))
    # On the later snapshot, epoch 0's value survives only for the examples not seen since.
    e0_late = tracker_lib.epoch_losses(snapshot_1, 0)
    np.testing.assert_array_equal(e0_late, np.float32([np.nan, 1.5, np.nan, 2.0, 0.75, 3.0]))


def test_update_does_not_retrace():
    cfg = TrackerConfig(criterion="loss", eps_low=0.75, eps_high=1.25, early_epochs=2)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def update(tracker, idx_B, loss_B, acc_B, mask_B, step, epoch):
        return tracker_lib.update(tracker, idx_B, loss_B, acc_B, mask_B, step, epoch, cfg, unique=True)

    n, b, steps_per_epoch = 37, 16, 3
    rng = np.random.default_rng(0)
    tracker = ExampleTracker.create(n, multiple_of=8)
    for step in range(12):
        epoch = step // steps_per_epoch
        idx_B, loss_B, acc_B, mask_B, _ = _random_batch(rng, n, cfg, b=b, duplicates=False)
        if step % steps_per_epoch == steps_per_epoch - 1:  # padded final batch of the epoch
            mask_B[b // 2 :] = False
            idx_B[b // 2 :] = n
        tracker = _call(update, tracker, idx_B, loss_B, acc_B, mask_B, step, epoch)
    assert update._cache_size() == 1
    assert tracker_lib.to_numpy(tracker)["last_epoch_N"].max() == 3
