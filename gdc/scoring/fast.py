"""Compiled kernels (numba) for the forget-event state machine on large loss matrices; exact, not approximations.

``machine``: the tracker's learned/forgotten state machine (hysteresis, per-example thresholds, NaN = unobserved),
the same comparisons in the loss matrix's dtype as ``cartography.forget_events``, one pass over ``[E, N]`` in
column blocks that stay in cache. Measured no faster than the numpy loop for one threshold (both stream the matrix),
so ``forget_events`` keeps the loop; ``sweep`` uses it for its tied columns.

``sweep``: S single thresholds at once. With eps sorted, an observation's state for every threshold is given by one
number, k = #{eps_j < L} (learned at threshold j iff j >= k, when L equals no eps_j): a step from k_prev to k
forgets at every j in [k_prev, k) and learns at every j in [k, k_prev). Each step therefore adds +1/-1 at two
entries of a per-example difference array over j; a cumulative sum over j gives the counts, so the cost is
O(E x N x log S + S x N) instead of O(S x E x N). A column where some loss equals some eps exactly (the state then
keeps its previous value for that threshold) is flagged and recomputed with ``machine``, so results stay exact.
"""

import numba
import numpy as np

BLOCK = 2048  # columns per block: the block's state and rows stay in L1/L2.


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
                seen = x == x  # False for NaN: unobserved, the state is kept.
                was = learned_N[i]
                learn_ev = seen & ~was & (x < low_N[i])
                forget_ev = seen & was & (x > high_N[i])
                learned_N[i] = (was | learn_ev) & ~forget_ev
                learn_N[i] += learn_ev
                forget_N[i] += forget_ev
                observed_N[i] += seen
                f = first_N[i]
                first_N[i] = t if learn_ev & (f < 0) else f


def machine(loss_ExN: np.ndarray, low_N: np.ndarray, high_N: np.ndarray) -> dict[str, np.ndarray]:
    """Forget/learn counts, final state, observed counts and first learn checkpoint (see ``forget_events``)."""
    e, n = loss_ExN.shape
    out = {
        "forget_N": np.zeros(n, np.int32),
        "learn_N": np.zeros(n, np.int32),
        "learned_N": np.zeros(n, np.bool_),
        "observed_N": np.zeros(n, np.int32),
        "first_learned_N": np.full(n, -1, np.int32),
    }
    low_N = np.ascontiguousarray(np.broadcast_to(low_N, (n,)))
    high_N = np.ascontiguousarray(np.broadcast_to(high_N, (n,)))
    _machine(np.ascontiguousarray(loss_ExN), low_N, high_N, *out.values())
    return out


@numba.njit(cache=True, nogil=True)
def _sweep(loss_ExN, eps_S, order_S, forget_SxN, learn_SxN, ever_SxN, tie_N):
    e, n = loss_ExN.shape
    s = eps_S.shape[0]  # sorted ascending
    k_prev = np.empty(BLOCK, np.int32)
    k_cur = np.empty(BLOCK, np.int32)
    k_min = np.empty(BLOCK, np.int32)
    dforget = np.zeros((BLOCK, s + 1), np.int32)
    dlearn = np.zeros((BLOCK, s + 1), np.int32)
    for b0 in range(0, n, BLOCK):
        b1 = min(n, b0 + BLOCK)
        m = b1 - b0
        k_prev[:] = s  # before the first observation no threshold is learned, as if L = +inf
        k_min[:] = s
        dforget[:] = 0
        dlearn[:] = 0
        for t in range(e):
            row = loss_ExN[t, b0:b1]
            for i in range(m):  # branch-free, vectorised: k = #{eps_q < x}, NaN keeps the previous k
                x = row[i]
                k = 0
                for q in range(s):
                    k += eps_S[q] < x
                k_cur[i] = k if x == x else k_prev[i]
            for i in range(m):  # two +-1 updates of the difference arrays per observation
                kp = k_prev[i]
                k = k_cur[i]
                tie_N[b0 + i] |= eps_S[min(k, s - 1)] == row[i]  # x equals a threshold (NaN never does)
                up = np.int32(k > kp)
                down = np.int32(k < kp)
                dforget[i, kp] += up
                dforget[i, k] -= up
                dlearn[i, k] += down
                dlearn[i, kp] -= down
                k_prev[i] = k
                k_min[i] = min(k_min[i], k)
        for i in range(m):
            f = 0
            g = 0
            for q in range(s):
                f += dforget[i, q]
                g += dlearn[i, q]
                forget_SxN[order_S[q], b0 + i] = f
                learn_SxN[order_S[q], b0 + i] = g
                ever_SxN[order_S[q], b0 + i] = k_min[i] <= q


def sweep(loss_ExN: np.ndarray, eps_S: np.ndarray) -> dict[str, np.ndarray]:
    """Forget and learn counts ``[S, N]`` and ever-learned ``[S, N]`` for S single thresholds (eps_low = eps_high).

    Thresholds are compared in the loss matrix's dtype, as in ``forget_events``; NaN thresholds are not allowed.
    """
    loss_ExN = np.ascontiguousarray(loss_ExN)
    eps_S = np.asarray(eps_S, loss_ExN.dtype).reshape(-1)
    if np.isnan(eps_S).any():
        raise ValueError("sweep thresholds must not be NaN.")
    s, n = eps_S.shape[0], loss_ExN.shape[1]
    order_S = np.argsort(eps_S, kind="stable")
    out = {
        "forget_SxN": np.zeros((s, n), np.int32),
        "learn_SxN": np.zeros((s, n), np.int32),
        "ever_learned_SxN": np.zeros((s, n), np.bool_),
    }
    tie_N = np.zeros(n, np.bool_)
    _sweep(loss_ExN, eps_S[order_S], order_S, *out.values(), tie_N)
    tied = np.flatnonzero(tie_N)
    if tied.size:  # exact recount where a loss sits exactly on a threshold (the state then keeps its value)
        sub = np.ascontiguousarray(loss_ExN[:, tied])
        for q in range(s):
            ev = machine(sub, eps_S[q], eps_S[q])
            out["forget_SxN"][q, tied] = ev["forget_N"]
            out["learn_SxN"][q, tied] = ev["learn_N"]
            out["ever_learned_SxN"][q, tied] = ev["learn_N"] > 0
    return out
