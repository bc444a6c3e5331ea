"""Localization scores of Wang et al. (NeurIPS 2024) and the enrichment test, in numpy on activations.

* ``unit_mem``: UnitMem(u) = (mu_max - mu_rest) / (mu_max + mu_rest) per unit, where mu_{i,u} is unit u's mean
  activation over augmentations of example i, mu_max = max_i mu_{i,u} and mu_rest pools the other examples (the
  public code takes their median, the paper reportedly their mean: both are offered). In [0, 1] for non-negative
  (post-ReLU) activations; 1 means the unit fires for one example only. A unit that never fires scores 0.
* ``class_mem``: ClassMem(u), the same formula on class-averaged activations: mu_{c,u} is unit u's mean activation over
  the examples of class c (each already averaged over augmentations), mu_max the largest class mean and mu_rest pools
  the other classes. 1 means the unit fires for one class only: class selectivity, where UnitMem is example
  selectivity.
* ``layer_mem``: LayerMem_l(x) = d_g(x) - d_f(x), with d(x) = mean over augmentations of ||h(x) - h(aug x)||_2 on the
  L2-normalised flattened layer output, f the candidate encoder (trained on x) and g the independent one (not).
  Normalised, as in the public code, by the range of that difference over the candidates; the layer score is the
  mean over candidates, and Delta-LayerMem_l = LayerMem_l - LayerMem_{l-1}.
* ``enrichment``: are the examples a set of units peak on over-represented in a quadrant? Sample odds ratio of the
  2x2 table (Haldane's +0.5 when a cell is empty) and a one-sided permutation p-value that shuffles the quadrant
  labels over the examples.
"""

import numpy as np

REST = ("median", "mean")


def unit_mu(act_ZxNxU: np.ndarray) -> np.ndarray:
    """mu_NxU: each unit's activation averaged over the Z augmentations of each of the N examples."""
    act_ZxNxU = np.asarray(act_ZxNxU, np.float64)
    if act_ZxNxU.ndim != 3:
        raise ValueError(f"need activations [Z, N, U], got shape {act_ZxNxU.shape}.")
    return act_ZxNxU.mean(axis=0)


def unit_mem(mu_NxU: np.ndarray, rest: str = "median") -> tuple[np.ndarray, np.ndarray]:
    """UnitMem per unit from mean activations ``mu_NxU`` (N >= 2 examples).

    Args:
      mu_NxU: mean activation of each unit on each example (``unit_mu``).
      rest: how the examples other than the argmax are pooled: "median" (public code) or "mean".

    Returns:
      (unitmem_U float64, argmax_U int64): the score and the example each unit peaks on (first index on ties).
    """
    if rest not in REST:
        raise ValueError(f"rest={rest!r}: use one of {REST}.")
    mu_NxU = np.asarray(mu_NxU, np.float64)
    n, u = mu_NxU.shape
    if n < 2:
        raise ValueError("UnitMem needs at least 2 examples.")
    argmax_U = np.argmax(mu_NxU, axis=0)
    mu_max_U = mu_NxU[argmax_U, np.arange(u)]
    keep_NxU = np.ones((n, u), bool)
    keep_NxU[argmax_U, np.arange(u)] = False
    others_MxU = mu_NxU.T[keep_NxU.T].reshape(u, n - 1).T
    mu_rest_U = np.median(others_MxU, axis=0) if rest == "median" else others_MxU.mean(axis=0)
    denom_U = mu_max_U + mu_rest_U
    score_U = np.divide(mu_max_U - mu_rest_U, denom_U, out=np.zeros(u), where=denom_U > 0)
    return score_U, argmax_U


def class_mu(mu_NxU: np.ndarray, labels_N: np.ndarray) -> np.ndarray:
    """mu_CxU: the per-example means ``mu_NxU`` averaged over the examples of each class (classes 0..C-1 present)."""
    mu_NxU, labels_N = np.asarray(mu_NxU, np.float64), np.asarray(labels_N)
    if labels_N.shape != mu_NxU.shape[:1]:
        raise ValueError(f"labels {labels_N.shape} must give one class per example of mu {mu_NxU.shape}.")
    classes = np.unique(labels_N)
    return np.stack([mu_NxU[labels_N == c].mean(axis=0) for c in classes])


def class_mem(mu_NxU: np.ndarray, labels_N: np.ndarray, rest: str = "median") -> np.ndarray:
    """ClassMem per unit: UnitMem's formula over class means instead of examples (needs >= 2 classes)."""
    return unit_mem(class_mu(mu_NxU, labels_N), rest)[0]


def _unit_rows(h_BxD: np.ndarray) -> np.ndarray:
    h_BxD = np.asarray(h_BxD, np.float64).reshape(h_BxD.shape[0], -1)
    norm_B = np.linalg.norm(h_BxD, axis=1, keepdims=True)
    return np.divide(h_BxD, norm_B, out=np.zeros_like(h_BxD), where=norm_B > 0)


def alignment_distance(h_NxD: np.ndarray, h_aug_ZxNxD: np.ndarray) -> np.ndarray:
    """d_N = mean over the Z augmentations of ||normalise(h(x)) - normalise(h(aug x))||_2 (flattened layer output)."""
    ref_NxD = _unit_rows(h_NxD)
    h_aug_ZxNxD = np.asarray(h_aug_ZxNxD)
    dist_ZxN = np.stack([np.linalg.norm(_unit_rows(h) - ref_NxD, axis=1) for h in h_aug_ZxNxD])
    return dist_ZxN.mean(axis=0)


def layer_mem(d_f_N: np.ndarray, d_g_N: np.ndarray) -> dict[str, np.ndarray | float]:
    """LayerMem of one layer from the candidates' alignment distances under f (trained on them) and g (not).

    Returns:
      raw_N = d_g - d_f; score_N = raw_N / (max raw_N - min raw_N) (the public code's range normalisation; raw when
      the range is 0); layer_mem = mean score_N; raw_mean = mean raw_N.
    """
    raw_N = np.asarray(d_g_N, np.float64) - np.asarray(d_f_N, np.float64)
    span = float(raw_N.max() - raw_N.min()) if raw_N.size else 0.0
    score_N = raw_N / span if span > 0 else raw_N
    return {"raw_N": raw_N, "score_N": score_N, "layer_mem": float(score_N.mean()), "raw_mean": float(raw_N.mean())}


def delta_layer_mem(layer_mem_Ly: np.ndarray) -> np.ndarray:
    """Delta-LayerMem_l = LayerMem_l - LayerMem_{l-1}, with LayerMem_0 = 0 (the first layer keeps its own score)."""
    x_Ly = np.asarray(layer_mem_Ly, np.float64)
    return np.diff(x_Ly, prepend=0.0)


def odds_ratio(selected_N: np.ndarray, group_N: np.ndarray) -> tuple[float, np.ndarray]:
    """Sample odds ratio (a d) / (b c) of the 2x2 table selected x in-group; +0.5 in every cell if one is empty,
    NaN if a whole row or column is empty.

    Returns:
      (odds ratio, table_2x2 int64 [[sel & grp, sel & ~grp], [~sel & grp, ~sel & ~grp]]).
    """
    sel_N, grp_N = np.asarray(selected_N, bool), np.asarray(group_N, bool)
    if sel_N.shape != grp_N.shape:
        raise ValueError(f"selected {sel_N.shape} and group {grp_N.shape} must have the same shape.")
    table = np.array(
        [[np.sum(sel_N & grp_N), np.sum(sel_N & ~grp_N)], [np.sum(~sel_N & grp_N), np.sum(~sel_N & ~grp_N)]],
        np.int64,
    )
    if (table.sum(axis=0) == 0).any() or (table.sum(axis=1) == 0).any():
        return float("nan"), table  # a margin is empty (no group member, or nothing selected): no odds ratio
    t = table.astype(np.float64) + (0.5 if (table == 0).any() else 0.0)
    return float(t[0, 0] * t[1, 1] / (t[0, 1] * t[1, 0])), table


def enrichment(selected_N: np.ndarray, group_N: np.ndarray, permutations: int = 10000, seed: int = 0) -> dict:
    """Odds ratio of ``group`` among ``selected`` examples and its one-sided permutation p-value.

    The group labels are shuffled over the N examples ``permutations`` times; the p-value is
    (1 + #{shuffles with overlap >= observed}) / (1 + permutations). The overlap |selected & group| is a monotone
    function of the odds ratio at fixed margins, so this is the permutation test of "odds ratio > 1" (its exact
    version is Fisher's one-sided test, against which the tests check it).
    """
    sel_N, grp_N = np.asarray(selected_N, bool), np.asarray(group_N, bool)
    ratio, table = odds_ratio(sel_N, grp_N)
    rng = np.random.default_rng(seed)
    observed = int(table[0, 0])
    sel_ids = np.flatnonzero(sel_N)
    count, done, chunk = 0, 0, 1000
    while done < permutations:  # chunks keep the [chunk, N] permutation matrix small
        m = min(chunk, permutations - done)
        perm_RxN = rng.permuted(np.broadcast_to(grp_N, (m, grp_N.size)), axis=1)
        count += int(np.sum(perm_RxN[:, sel_ids].sum(axis=1) >= observed))
        done += m
    expected = sel_N.sum() * grp_N.sum() / max(sel_N.size, 1)
    return {
        "odds_ratio": ratio,
        "p_value": (1 + count) / (1 + permutations),
        "table": table.tolist(),
        "overlap": observed,
        "expected_overlap": float(expected),
        "n_selected": int(sel_N.sum()),
        "n_group": int(grp_N.sum()),
        "permutations": permutations,
    }
