"""Per-example cartography scores on a loss matrix ``loss_ExN`` (E checkpoints x N examples), numpy only.

Invariants and choices (paper.md §4, §10):
  * NaN means "not observed at that checkpoint". Every score skips NaNs: the forget state machine keeps its state,
    and consecutive differences join consecutive *observed* checkpoints.
  * ``forget_events`` is the tracker's state machine run offline, the same rule (``gdc.forgetting.transition``):
    every example starts not learned, becomes learned when loss < eps_low, is forgotten when, while learned,
    loss > eps_high. Comparisons are done in the loss matrix's dtype (float32 from the trackers), as the tracker
    does, so counts match it exactly.
  * m = forget count / (E - 1): the share of checkpoint transitions that are forget events (§10 item 4). Since a
    forget event needs a learn event before it, m <= floor(E / 2) / (E - 1), about 1/2, never 1.
  * Never-learned examples have zero forget events, so m = 0, as for examples learned and never forgotten. They are
    told apart by ``state_N`` and by ``m_rank_N`` (-inf for them), see ``memorization``.
  * Upward variation sum_t max(0, L_t - L_{t-1}) is the threshold-free version of the forget count: integrated over
    every eps, the single-threshold forget count equals it exactly (``upward_variation`` docstring).
"""

import warnings

import numpy as np

from gdc.forgetting import transition

EPS_KINDS = ("absolute", "percentile", "relative")
FAST_MIN_SIZE = 1 << 18  # eps sweeps over loss matrices with at least this many entries use fast.sweep
# state_N codes.
STATE_NAMES = ("learned-never-forgotten", "forgotten", "never-learned", "unobserved")
LEARNED, FORGOTTEN, NEVER_LEARNED, UNOBSERVED = 0, 1, 2, 3
# quadrant_N codes (paper §4.4); -1 marks examples without a finite d or m.
QUADRANT_NAMES = ("Stable-Easy", "Ambiguous-Hard", "Hotspot-Memorized", "Noisy-Outlier")


def _matrix(loss_ExN: np.ndarray) -> np.ndarray:
    loss_ExN = np.asarray(loss_ExN)
    if loss_ExN.ndim != 2:
        raise ValueError(f"need a [E, N] loss matrix, got shape {loss_ExN.shape}.")
    if not np.issubdtype(loss_ExN.dtype, np.floating):
        loss_ExN = loss_ExN.astype(np.float32)
    return loss_ExN


def _consecutive(loss_ExN: np.ndarray):
    """Yields (prev_N, cur_N, valid_N) per checkpoint: prev is each example's last observed loss before it."""
    prev_N = np.full(loss_ExN.shape[1], np.nan, loss_ExN.dtype)
    for cur_N in loss_ExN:
        seen_N = ~np.isnan(cur_N)
        yield prev_N, cur_N, seen_N & ~np.isnan(prev_N)
        prev_N = np.where(seen_N, cur_N, prev_N)


def _nan_reduce(fn, x: np.ndarray, **kw) -> np.ndarray:
    with warnings.catch_warnings():  # all-NaN columns give NaN, which is the intended answer.
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(x, **kw)


def difficulty(loss_ExN: np.ndarray, early: int) -> np.ndarray:
    """d_N: mean loss over the first ``early`` checkpoints, skipping NaNs (NaN if none observed); float64."""
    if early < 1:
        raise ValueError(f"early={early}: need >= 1 checkpoint.")
    return _nan_reduce(np.nanmean, _matrix(loss_ExN)[:early].astype(np.float64), axis=0)


def first_loss(loss_ExN: np.ndarray) -> np.ndarray:
    """Each example's first observed loss (NaN if never observed)."""
    loss_ExN = _matrix(loss_ExN)
    seen_ExN = ~np.isnan(loss_ExN)
    t_N = np.argmax(seen_ExN, axis=0)
    return np.where(seen_ExN.any(axis=0), loss_ExN[t_N, np.arange(loss_ExN.shape[1])], np.nan)


def final_loss(loss_ExN: np.ndarray) -> np.ndarray:
    """Each example's last observed loss (NaN if never observed)."""
    return first_loss(_matrix(loss_ExN)[::-1])


def resolve_eps(loss_ExN: np.ndarray, kind: str, value: float) -> np.ndarray:
    """One loss threshold, as an array broadcastable against ``[N]``.

    Args:
      loss_ExN: the loss matrix.
      kind: "absolute": eps = value. "percentile": eps = the value-th percentile (0..100) of the examples' final
        losses (each example's last observed loss). "relative": per example, eps_N = value x its own first observed
        loss (e.g. 0.5: learned once the loss has halved).
      value: the threshold parameter of that kind.

    Returns:
      float64 eps: a 0-d array, or ``[N]`` for "relative" (NaN for never-observed examples).
    """
    if kind == "absolute":
        return np.asarray(value, np.float64)
    if kind == "percentile":
        if not 0.0 <= value <= 100.0:
            raise ValueError(f"percentile eps={value}: need 0..100.")
        return np.asarray(np.nanpercentile(final_loss(loss_ExN).astype(np.float64), value))
    if kind == "relative":
        return value * first_loss(loss_ExN).astype(np.float64)
    raise ValueError(f"eps kind {kind!r} is not one of {EPS_KINDS}.")


def resolve_pair(loss_ExN: np.ndarray, kind: str, value: float | tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """(eps_low, eps_high) from one value (single threshold) or a (low, high) pair of the same kind (hysteresis)."""
    low, high = (value, value) if np.isscalar(value) else value
    eps_low = resolve_eps(loss_ExN, kind, low)
    return eps_low, (eps_low if high == low else resolve_eps(loss_ExN, kind, high))


def forget_events(
    loss_ExN: np.ndarray, eps_low: np.ndarray | float, eps_high: np.ndarray | float | None = None
) -> dict[str, np.ndarray | int]:
    """The tracker's learned/forgotten state machine run over the checkpoints, vectorised over examples.

    Args:
      loss_ExN: loss matrix; NaN entries leave an example's state unchanged.
      eps_low: learn threshold (scalar or ``[N]``): a not-learned example with loss < eps_low becomes learned.
      eps_high: forget threshold (scalar or ``[N]``, >= eps_low): a learned example with loss > eps_high is
        forgotten. None: eps_high = eps_low (single threshold).

    Returns:
      forget_N, learn_N (int32 event counts), ever_learned_N, learned_N (final state), observed_N (int32 observed
      checkpoints), first_learned_N (int32 checkpoint of the first learn event, -1: never), transitions (E - 1) and
      transitions_N (observed_N - 1, at least 0: the transitions between observed checkpoints).
    """
    loss_ExN = _matrix(loss_ExN)
    e, n = loss_ExN.shape
    low_N = np.broadcast_to(np.asarray(eps_low, loss_ExN.dtype), (n,))
    high_N = low_N if eps_high is None else np.broadcast_to(np.asarray(eps_high, loss_ExN.dtype), (n,))
    if np.any(low_N > high_N):
        raise ValueError("eps_low > eps_high for some examples: hysteresis needs eps_low <= eps_high.")
    learned_N = np.zeros(n, bool)
    learn_N = np.zeros(n, np.int32)
    forget_N = np.zeros(n, np.int32)
    observed_N = np.zeros(n, np.int32)
    first_N = np.full(n, -1, np.int32)
    for t, l_N in enumerate(loss_ExN):
        learned_N, learn_ev_N, forget_ev_N = transition(learned_N, l_N, low_N, high_N)  # NaN: no event
        first_N = np.where(learn_ev_N & (first_N < 0), t, first_N)
        learn_N += learn_ev_N
        forget_N += forget_ev_N
        observed_N += ~np.isnan(l_N)
    return {
        "forget_N": forget_N,
        "learn_N": learn_N,
        "ever_learned_N": learn_N > 0,
        "learned_N": learned_N,
        "observed_N": observed_N,
        "first_learned_N": first_N,
        "transitions": max(e - 1, 0),
        "transitions_N": np.maximum(observed_N - 1, 0).astype(np.int32),
    }


def upward_crossings(loss_ExN: np.ndarray, eps: np.ndarray | float) -> np.ndarray:
    """Raw count of upward crossings L_prev < eps < L_t over consecutive observed checkpoints, regardless of state."""
    loss_ExN = _matrix(loss_ExN)
    eps_N = np.asarray(eps, loss_ExN.dtype)
    count_N = np.zeros(loss_ExN.shape[1], np.int32)
    for prev_N, cur_N, valid_N in _consecutive(loss_ExN):
        count_N += valid_N & (prev_N < eps_N) & (eps_N < cur_N)
    return count_N


def play_operator(loss_ExN: np.ndarray, width: float) -> np.ndarray:
    """Backlash ("play") filter y_t = clip(y_{t-1}, L_t - width, L_t), y_0 = L_0 (NaNs skipped, kept NaN).

    y_t < eps is exactly the state "learned" of the hysteresis machine (eps_low = eps, eps_high = eps + width) for
    almost every eps, so its forget count is the number of upward crossings of eps by y.
    """
    loss_ExN = _matrix(loss_ExN).astype(np.float64)
    y_ExN = np.full_like(loss_ExN, np.nan)
    y_N = np.full(loss_ExN.shape[1], np.nan)
    for t, l_N in enumerate(loss_ExN):
        seen_N = ~np.isnan(l_N)
        y_N = np.where(seen_N, np.where(np.isnan(y_N), l_N, np.clip(y_N, l_N - width, l_N)), y_N)
        y_ExN[t] = np.where(seen_N, y_N, np.nan)
    return y_ExN


def upward_variation(loss_ExN: np.ndarray, width: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Threshold-free forget score: uv = sum_t max(0, L_t - L_prev) over consecutive observed checkpoints.

    Identity (exact; tested): integrating over eps in R the number of upward crossings L_prev < eps < L_t gives uv,
    since each rise contributes the length of the interval it crosses. The stateful single-threshold forget count
    (learned needed first) equals the crossing count for every eps not equal to an observed loss (the state after a
    checkpoint is then "L < eps"), so it integrates to uv as well. With hysteresis (eps_low = eps,
    eps_high = eps + width) the forget count integrates to the upward variation of ``play_operator(L, width)``,
    which this function returns when width > 0 (<= the uv of L).

    Args:
      loss_ExN: loss matrix (NaN: not observed).
      width: hysteresis width; 0 gives the plain upward variation.

    Returns:
      (uv_N, uv_norm_N), float64: uv_norm = uv / total variation sum_t |L_t - L_prev|, in [0, 1], the share of the
      trajectory's movement that goes up (0 for a constant or single-observation trajectory). Since
      uv - downward variation = L_last - L_first, uv_norm = (1 + (L_last - L_first) / tv) / 2.
    """
    x_ExN = play_operator(loss_ExN, width) if width > 0 else _matrix(loss_ExN).astype(np.float64)
    uv_N = np.zeros(x_ExN.shape[1])
    tv_N = np.zeros(x_ExN.shape[1])
    for prev_N, cur_N, valid_N in _consecutive(x_ExN):
        diff_N = np.where(valid_N, cur_N - prev_N, 0.0)
        uv_N += np.maximum(diff_N, 0.0)
        tv_N += np.abs(diff_N)
    return uv_N, np.divide(uv_N, tv_N, out=np.zeros_like(uv_N), where=tv_N > 0)


def memorization(
    forget_N: np.ndarray,
    transitions: int | np.ndarray,
    ever_learned_N: np.ndarray,
    *,
    observed_N: np.ndarray | None = None,
    never_learned: str = "sentinel",
) -> dict[str, np.ndarray]:
    """Memorization score m = forget / transitions, with never-learned examples kept as an explicit state.

    Args:
      forget_N: forget-event counts.
      transitions: the denominator: E - 1 (the paper's "share of transitions", the default everywhere) or a per
        example ``[N]`` count (``transitions_N``, for runs where examples miss checkpoints). 0 gives m = 0.
      ever_learned_N: bool, the example had at least one learn event.
      observed_N: optional observed-checkpoint counts; 0 marks the example "unobserved" (e.g. pruned away).
      never_learned: "sentinel": ``m_rank_N`` is -inf for never-learned and unobserved examples, so a descending
        sort by m puts them in their own group after every learned example (including learned ones with m = 0);
        "zero": ``m_rank_N`` = m (they tie with learned-never-forgotten examples at 0).

    Returns:
      m_N (float64), m_rank_N (float64 ranking key), state_N (int8 codes into STATE_NAMES: 0 learned and never
      forgotten, 1 forgotten at least once, 2 never learned, 3 unobserved), forget_N (the raw counts, int32).
    """
    if never_learned not in ("sentinel", "zero"):
        raise ValueError(f"never_learned={never_learned!r}: use 'sentinel' or 'zero'.")
    forget_N = np.asarray(forget_N, np.int32)
    denom_N = np.broadcast_to(np.asarray(transitions, np.float64), forget_N.shape)
    m_N = np.divide(forget_N, denom_N, out=np.zeros(forget_N.shape), where=denom_N > 0)
    state_N = np.where(forget_N > 0, FORGOTTEN, LEARNED).astype(np.int8)
    state_N[~np.asarray(ever_learned_N, bool)] = NEVER_LEARNED
    if observed_N is not None:
        state_N[np.asarray(observed_N) == 0] = UNOBSERVED
    m_rank_N = m_N.copy()
    if never_learned == "sentinel":
        m_rank_N[state_N >= NEVER_LEARNED] = -np.inf
    return {"m_N": m_N, "m_rank_N": m_rank_N, "state_N": state_N, "forget_N": forget_N}


def top_fraction(
    score_N: np.ndarray, fraction: float, tie_break_N: np.ndarray | None = None, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """Ids of the top ``fraction`` of examples by score, with explicit tie breaking (m is discrete: ties).

    Order: score descending, then ``tie_break_N`` descending, then a seeded random permutation. NaN scores rank
    last. k = round(fraction x N), halves rounded up.

    Returns:
      (ids, info): int64 ids best first; info holds k, cut_score (score of the k-th id), tie_size (examples whose
      score equals cut_score), tie_selected (how many of them were taken), random_tie_size (of those, how many also
      tie on the secondary key, i.e. were split by the seeded permutation) and resolved_by ("none", "secondary" or
      "random").
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}: need 0..1.")
    score_N = np.nan_to_num(np.asarray(score_N, np.float64), nan=-np.inf)
    n = score_N.shape[0]
    k = int(np.floor(fraction * n + 0.5))
    second_N = np.zeros(n) if tie_break_N is None else np.nan_to_num(np.asarray(tie_break_N, np.float64), nan=-np.inf)
    rand_N = np.random.default_rng(seed).permutation(n)
    # The first k of the full order lexsort((rand, -second, -score)) without sorting all N: only the examples scoring
    # at least the k-th largest score can be among them, so only those are sorted.
    order = np.zeros(0, np.int64)
    if k:
        cut = -np.partition(-score_N, k - 1)[k - 1]
        cand = np.flatnonzero(score_N >= cut)
        order = cand[np.lexsort((rand_N[cand], -second_N[cand], -score_N[cand]))]
    ids = order[:k].astype(np.int64)
    info = {
        "k": k,
        "n": n,
        "cut_score": None,
        "tie_size": 0,
        "tie_selected": 0,
        "random_tie_size": 0,
        "resolved_by": "none",
    }
    if 0 < k:
        cut = score_N[order[k - 1]]
        tied_N = score_N == cut
        both_N = tied_N & (second_N == second_N[order[k - 1]])
        info.update(
            cut_score=float(cut),
            tie_size=int(tied_N.sum()),
            tie_selected=int(tied_N[ids].sum()),
            random_tie_size=int(both_N.sum()),
        )
        if info["tie_selected"] < info["tie_size"]:
            info["resolved_by"] = "random" if both_N[ids].sum() < both_N.sum() else "secondary"
    return ids, info


def quadrants(
    d_N: np.ndarray,
    m_N: np.ndarray,
    q_d: float = 50.0,
    q_m: float = 50.0,
    tie_break: str = "strict",
    *,
    state_N: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, dict]:
    """Quadrant map of paper §4.4: high d means d > tau_d, high m means m > tau_m (strict).

    tau_d, tau_m are the q_d-th, q_m-th percentiles (linear interpolation) of the finite d, m. When most m are 0,
    tau_m = 0 and "m > tau_m" means at least one forget event; ``info`` reports the ties at each threshold.
    Never-learned examples enter with their m (0 from ``memorization``, so never "high m") and their d (they are
    usually high d: Ambiguous-Hard); ``info`` counts them per quadrant when ``state_N`` is given.

    Args:
      d_N, m_N: difficulty and memorization (NaN: unscored, quadrant -1).
      q_d, q_m: percentiles 0..100.
      tie_break: "strict": the paper's rule; ties at tau fall on the low side, so the high fractions can be far
        below 1 - q/100. "rank": exactly round((1 - q/100) x n) examples are high on each axis, chosen by
        ``top_fraction`` with the other axis as secondary key, then a seeded permutation.
      state_N: optional state codes from ``memorization``.
      seed: for "rank".

    Returns:
      quadrant_N (int8: 0 Stable-Easy, 1 Ambiguous-Hard, 2 Hotspot-Memorized, 3 Noisy-Outlier, -1 unscored), info.
    """
    d_N, m_N = np.asarray(d_N, np.float64), np.asarray(m_N, np.float64)
    ok_N = np.isfinite(d_N) & np.isfinite(m_N)
    ok_ids = np.flatnonzero(ok_N)
    quadrant_N = np.full(d_N.shape, -1, np.int8)
    info: dict = {"q_d": q_d, "q_m": q_m, "tie_break": tie_break, "n_scored": int(ok_N.sum())}
    if ok_ids.size == 0:
        return quadrant_N, info
    d, m = d_N[ok_ids], m_N[ok_ids]
    tau_d, tau_m = float(np.percentile(d, q_d)), float(np.percentile(m, q_m))
    if tie_break == "strict":
        high_d, high_m = d > tau_d, m > tau_m
    elif tie_break == "rank":
        high_d, high_m = np.zeros(d.shape, bool), np.zeros(m.shape, bool)
        high_d[top_fraction(d, 1.0 - q_d / 100.0, tie_break_N=m, seed=seed)[0]] = True
        high_m[top_fraction(m, 1.0 - q_m / 100.0, tie_break_N=d, seed=seed)[0]] = True
    else:
        raise ValueError(f"tie_break={tie_break!r}: use 'strict' or 'rank'.")
    quadrant_N[ok_ids] = high_d.astype(np.int8) + 2 * high_m.astype(np.int8)
    info.update(
        tau_d=tau_d,
        tau_m=tau_m,
        n_d_at_tau=int((d == tau_d).sum()),
        n_m_at_tau=int((m == tau_m).sum()),
        n_m_zero=int((m == 0).sum()),
        n_high_d=int(high_d.sum()),
        n_high_m=int(high_m.sum()),
        counts={name: int((quadrant_N == q).sum()) for q, name in enumerate(QUADRANT_NAMES)},
    )
    if state_N is not None:
        nl_N = np.asarray(state_N) == NEVER_LEARNED
        info["never_learned"] = {name: int((nl_N & (quadrant_N == q)).sum()) for q, name in enumerate(QUADRANT_NAMES)}
    return quadrant_N, info


def probability_from_loss(loss_ExN: np.ndarray) -> np.ndarray:
    """exp(-loss): the gold-label probability for a classifier's cross-entropy; for a sequence model's mean token
    NLL, the geometric mean of its gold-token probabilities."""
    return np.exp(-np.asarray(loss_ExN, np.float64))


def cartography_axes(prob_ExN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Swayamdipta et al. (2020) axes: (confidence_N, variability_N) = mean and std (ddof 0) over checkpoints of
    the gold-label probability, skipping NaNs."""
    prob_ExN = np.asarray(prob_ExN, np.float64)
    return _nan_reduce(np.nanmean, prob_ExN, axis=0), _nan_reduce(np.nanstd, prob_ExN, axis=0)
