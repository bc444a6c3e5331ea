"""Compiled kernels (numba) for the forget-event state machine on large loss matrices; exact, not approximations.

``machine``: the tracker's learned/forgotten state machine (hysteresis, per-example thresholds, NaN = unobserved),
the rule ``gdc.forgetting.transition`` through its numba copy ``_transition``, with the comparisons in the loss
matrix's dtype as in ``cartography.forget_events``, one pass over ``[E, N]`` in column blocks that stay in cache.
Measured no faster than the numpy loop for one threshold (both stream the matrix), so ``forget_events`` keeps the
loop; ``sweep`` uses it for its tied columns.

``sweep``: S single thresholds at once. With eps sorted, an observation's state for every threshold is given by one
number, k = #{eps_j < L} (learned at threshold j iff j >= k, when L equals no eps_j): a step from k_prev to k
forgets at every j in [k_prev, k) and learns at every j in [k, k_prev). Each step therefore adds +1/-1 at two
entries of a per-example difference array over j; a cumulative sum over j gives the counts, so the cost is
O(E x N x log S + S x N) instead of O(S x E x N). A column where some loss equals some eps exactly (the state then
keeps its previous value for that threshold) is flagged and recomputed with ``machine``, so results stay exact.

``scores``: difficulty, the main (hysteresis) machine and the sweep fused into one pass over the matrix, column
blocks in parallel threads: the offline scoring of benchmarks/scoring_offline.py and of ``workdir.compute_scores``
for large runs.
"""

import numba
import numpy as np

BLOCK = 2048  # columns per block: the block's state and rows stay in L1/L2.


@numba.njit(inline="always")
def _transition(was, x, low, high):
    # numba's copy of gdc.forgetting.transition (loss criterion), which numba cannot call: keep the two equal
    # (tests/test_forgetting.py). Branch-free, so the kernels' column loops stay vectorised; NaN compares False.
    learn_ev = ~was & (x < low)
    forget_ev = was & (x > high)
    return (was | learn_ev) & ~forget_ev, learn_ev, forget_ev


@numba.njit(cache=True, nogil=True)
def _machine(loss_ExN, low_N, high_N, forget_N, learn_N, learned_N, observed_N, first_N):
    # Branch-free inner loop over a block of columns, so LLVM vectorises it.
    e, n = loss_ExN.shape
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        for t in range(e):
            row = loss_ExN[t]
            for i in range(b0, b1):
                x = row[i]
                learned_N[i], learn_ev, forget_ev = _transition(learned_N[i], x, low_N[i], high_N[i])
                learn_N[i] += learn_ev
                forget_N[i] += forget_ev
                observed_N[i] += x == x  # False for NaN: unobserved (the state was kept)
                f = first_N[i]
                first_N[i] = t if learn_ev & (f < 0) else f


def _machine_outputs(n: int) -> dict[str, np.ndarray]:
    """The state machine's zeroed outputs, in ``_machine``'s argument order."""
    return {
        "forget_N": np.zeros(n, np.int32),
        "learn_N": np.zeros(n, np.int32),
        "learned_N": np.zeros(n, np.bool_),
        "observed_N": np.zeros(n, np.int32),
        "first_learned_N": np.full(n, -1, np.int32),
    }


def machine(loss_ExN: np.ndarray, low_N: np.ndarray, high_N: np.ndarray) -> dict[str, np.ndarray]:
    """Forget/learn counts, final state, observed counts and first learn checkpoint (see ``forget_events``)."""
    e, n = loss_ExN.shape
    out = _machine_outputs(n)
    low_N = np.ascontiguousarray(np.broadcast_to(low_N, (n,)))
    high_N = np.ascontiguousarray(np.broadcast_to(high_N, (n,)))
    _machine(np.ascontiguousarray(loss_ExN), low_N, high_N, *out.values())
    return out


@numba.njit(cache=True, nogil=True, parallel=True)
def _fused(
    loss_ExN,
    early,
    low_N,
    high_N,
    eps_S,
    order_S,  # inputs; eps_S sorted ascending
    dsum_N,
    dcount_N,
    forget_N,
    learn_N,
    learned_N,
    observed_N,
    first_N,  # difficulty and the main state machine
    forget_SxN,
    learn_SxN,
    ever_SxN,
    tie_N,  # the sweep
):
    # One streaming pass: column blocks run in parallel (prange), each block's state stays in cache, and the inner
    # loops run over the block's columns without branches, so LLVM vectorises them.
    e, n = loss_ExN.shape
    s = eps_S.shape[0]
    for blk in numba.prange((n + BLOCK - 1) // BLOCK):
        b0 = blk * BLOCK
        b1 = min(n, b0 + BLOCK)
        m = b1 - b0
        dsum = np.zeros(m, np.float64)
        dcount = np.zeros(m, np.int32)
        learned = np.zeros(m, np.bool_)
        k_prev = np.full(m, s, np.int32)  # before the first observation no threshold is learned, as if L = +inf
        k_min = np.full(m, s, np.int32)
        k_cur = np.empty(m, np.int32)
        dforget = np.zeros((m, s + 1), np.int32)
        dlearn = np.zeros((m, s + 1), np.int32)
        for t in range(e):
            row = loss_ExN[t, b0:b1]
            if t < early:
                for i in range(m):
                    x = row[i]
                    seen = x == x  # False for NaN: unobserved
                    dsum[i] += x if seen else 0.0
                    dcount[i] += seen
            for i in range(m):  # the tracker's hysteresis machine
                x = row[i]
                learned[i], learn_ev, forget_ev = _transition(learned[i], x, low_N[b0 + i], high_N[b0 + i])
                learn_N[b0 + i] += learn_ev
                forget_N[b0 + i] += forget_ev
                observed_N[b0 + i] += x == x
                f = first_N[b0 + i]
                first_N[b0 + i] = t if learn_ev & (f < 0) else f
            if s == 0:
                continue
            k_cur[:] = 0
            for q in range(s):  # k = #{eps_q < x}; NaN compares False everywhere and keeps the previous k below
                eq = eps_S[q]
                for i in range(m):
                    k_cur[i] += eq < row[i]
            for i in range(m):  # two +-1 updates of the difference arrays per observation
                x = row[i]
                kp = k_prev[i]
                k = k_cur[i] if x == x else kp
                tie_N[b0 + i] |= eps_S[min(k, s - 1)] == x  # x equals a threshold (NaN never does)
                up = np.int32(k > kp)
                down = np.int32(k < kp)
                dforget[i, kp] += up
                dforget[i, k] -= up
                dlearn[i, k] += down
                dlearn[i, kp] -= down
                k_prev[i] = k
                k_min[i] = min(k_min[i], k)
        for i in range(m):
            dsum_N[b0 + i] = dsum[i]
            dcount_N[b0 + i] = dcount[i]
            learned_N[b0 + i] = learned[i]
            f = 0
            g = 0
            for q in range(s):
                f += dforget[i, q]
                g += dlearn[i, q]
                forget_SxN[order_S[q], b0 + i] = f
                learn_SxN[order_S[q], b0 + i] = g
                ever_SxN[order_S[q], b0 + i] = k_min[i] <= q


def scores(
    loss_ExN: np.ndarray,
    early: int,
    eps_low: np.ndarray | float,
    eps_high: np.ndarray | float | None = None,
    eps_S: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Difficulty, the (hysteresis) state machine and an S-threshold sweep in one parallel pass over ``loss_ExN``.

    Exactly ``cartography.difficulty`` (up to float64 summation order), ``cartography.forget_events`` and ``sweep``,
    which the tests check; the matrix may be memory-mapped.

    Returns:
      d_N (float64, NaN where no early checkpoint was observed), forget_N, learn_N, ever_learned_N, learned_N,
      observed_N, first_learned_N, transitions, transitions_N, and with ``eps_S``: forget_SxN, learn_SxN (int32) and
      ever_learned_SxN, rows in the given order of eps_S.
    """
    if loss_ExN.ndim != 2:
        raise ValueError(f"need a [E, N] loss matrix, got shape {loss_ExN.shape}.")
    if not np.issubdtype(loss_ExN.dtype, np.floating):
        loss_ExN = loss_ExN.astype(np.float32)
    if early < 1:
        raise ValueError(f"early={early}: need >= 1 checkpoint.")
    loss_ExN = np.ascontiguousarray(loss_ExN)
    e, n = loss_ExN.shape
    dt = loss_ExN.dtype
    low_N = np.ascontiguousarray(np.broadcast_to(np.asarray(eps_low, dt), (n,)))
    high_N = low_N if eps_high is None else np.ascontiguousarray(np.broadcast_to(np.asarray(eps_high, dt), (n,)))
    if np.any(low_N > high_N):
        raise ValueError("eps_low > eps_high for some examples: hysteresis needs eps_low <= eps_high.")
    eps_S = np.zeros(0, dt) if eps_S is None else np.asarray(eps_S, dt).reshape(-1)
    if np.isnan(eps_S).any():
        raise ValueError("sweep thresholds must not be NaN.")
    s = eps_S.shape[0]
    order_S = np.argsort(eps_S, kind="stable")
    dsum_N, dcount_N = np.empty(n), np.empty(n, np.int32)
    out = _machine_outputs(n)
    sw = {
        "forget_SxN": np.zeros((s, n), np.int32),
        "learn_SxN": np.zeros((s, n), np.int32),
        "ever_learned_SxN": np.zeros((s, n), np.bool_),
    }
    tie_N = np.zeros(n, np.bool_)
    _fused(
        loss_ExN, early, low_N, high_N, eps_S[order_S], order_S, dsum_N, dcount_N, *out.values(), *sw.values(), tie_N
    )
    tied = np.flatnonzero(tie_N)
    if tied.size:  # exact recount where a loss sits exactly on a threshold (the state then keeps its value)
        sub = np.ascontiguousarray(loss_ExN[:, tied])
        for q in range(s):
            ev = machine(sub, eps_S[q], eps_S[q])
            sw["forget_SxN"][q, tied] = ev["forget_N"]
            sw["learn_SxN"][q, tied] = ev["learn_N"]
            sw["ever_learned_SxN"][q, tied] = ev["learn_N"] > 0
    out["d_N"] = np.divide(dsum_N, dcount_N, out=np.full(n, np.nan), where=dcount_N > 0)
    out["ever_learned_N"] = out["learn_N"] > 0
    out["transitions"] = max(e - 1, 0)
    out["transitions_N"] = np.maximum(out["observed_N"] - 1, 0).astype(np.int32)
    return out | (sw if eps_S.size else {})


def sweep(loss_ExN: np.ndarray, eps_S: np.ndarray) -> dict[str, np.ndarray]:
    """Forget and learn counts ``[S, N]`` and ever-learned ``[S, N]`` for S single thresholds (eps_low = eps_high).

    Thresholds are compared in the loss matrix's dtype, as in ``forget_events``; NaN thresholds are not allowed.
    """
    loss_ExN = np.asarray(loss_ExN)
    eps_S = np.asarray(eps_S, loss_ExN.dtype).reshape(-1)
    out = scores(loss_ExN, 1, np.inf, np.inf, eps_S)
    return {k: out[k] for k in ("forget_SxN", "learn_SxN", "ever_learned_SxN")}
