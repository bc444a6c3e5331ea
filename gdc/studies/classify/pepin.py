"""Pepin et al. ("When can memorization improve fairness?"): zero-bias memorized sets as linear programs, closed-form
bounds on the memorized mass they need, and the equalized-odds condition.

Setting. A finite table (the training set: memorization is of training points) with groups a, labels y and a base
classifier f, summarised by the counts ``n_AxYxK[a, y, k]`` of rows with group a, label y and base prediction k.
Memorizing a set D gives the lookup memorizer f_D = y on D, f elsewhere. Only the composition of D over the
(a, y, k) cells matters, so D is described by x[a, y, k], the number of memorized rows of each cell
(0 <= x <= n[a, y, k]). A memorized row with k = y changes nothing; one with k != y moves 1 / n_a of group a's
prediction mass from class k to class y. Every rate of f_D is linear in x, so the memorized sets with zero bias
form a polytope and its least and largest mass p_D = sum x / n are linear programs (``zero_bias_lp``, HiGHS via
scipy.optimize.linprog). Two models of D:
  * ``selective``: D may choose rows by their (a, y, k) cell, i.e. it may know where f errs: x is free in its box.
  * ``composition``: D is described by its (y, a) composition alone, as in the paper's expressions (the label and
    group distribution of D, and f's bias on the unmemorized rows): it memorizes a share m[a, y] of every row of
    cell (a, y) whatever f predicts there, x[a, y, k] = m[a, y] n[a, y, k], 0 <= m <= 1. Then f's confusion on
    D^c is f's confusion on the cell, pi_{c|y,a}, and TPR_{c,a} = m + (1 - m) pi_{c|c,a}, off-diagonal
    P(f_D=c | y, a) = (1 - m) pi_{c|y,a} (c != y), P(f_D=c | a) = sum_y P(y | a)(m [c=y] + (1 - m) pi_{c|y,a}).
Metrics (every group's rates equal to group 0's): ``sp`` P(f_D=c | A=a) for c in ``classes`` (statistical parity),
``eo`` TPR_{c,a} for c in ``classes`` (equal opportunity), ``eodds`` every entry P(f_D=c | Y=y, A=a) (equalized
odds: TPR and FPR of every class; the rows sum to 1, so the off-diagonal entries suffice). A rate whose cell is
empty in some group is undefined and left out.

Bounds on the least mass p* of a zero-bias set (two groups; our derivation where the paper's statement is not
given in full). With s_a the rate vectors, P(y, a) cell masses and t_{c,a} = TPR_{c,a} of f:
  * ``eo``: TPR_{c,a} rises by 1 / n_{c,a} per memorized misclassified (Y=c, A=a) row, falls never, and the classes
    are decoupled, so in the selective model p* = sum_c P(Y=c, A=lo_c)(t_hi - t_lo) exactly (lower bound of any
    memorized set); in the composition model it is sum_c P(Y=c, A=lo_c)(t_hi - t_lo) / (1 - t_lo) (raising the
    other group only adds mass). The latter is the upper bound: what a set chosen blind to f's errors needs.
  * ``sp``: one memorized row of group a moves 1 / n_a of prediction mass between two classes, so
    sum_{c in classes} |s_0c - s_1c| falls by at most 2 / n_a and each |s_0c - s_1c| by at most 1 / n_a:
    p* >= min_a P(A=a) max(max_c |gap_c|, sum_c |gap_c| / 2). Necessary for feasibility: s_{a,c} can only move
    inside [P(f=c, Y=c | a), P(f=c or Y=c | a)], so these intervals must overlap across groups for every c
    (sufficient too for two classes). Upper bound when feasible: for two classes, meeting at a rate between the two
    costs at most max_a P(A=a) |gap| (the reachable intervals contain their own rate and overlap); for more classes
    the least set holds only misclassified rows, so p* <= P(f != Y).
  * ``eodds``: memorization only lowers off-diagonal entries, so in the selective model each off-diagonal entry
    falls to the smaller of the two groups': p* = sum_y sum_{c != y} P(Y=y, A=hi)|pi_{c|y,0} - pi_{c|y,1}| exactly,
    always feasible. In the composition model the off-diagonal rows scale by (1 - m_{y,a}): zero bias needs, for
    every y, pi_{c|y,0} / pi_{c|y,1} = (1 - m_{y,1}) / (1 - m_{y,0}) for every c != y (the paper's ratio condition:
    the off-diagonal rows proportional, true generically only for two classes), or else both (y, a) cells memorized
    whole. Least mass: P(Y=y, A=hi)(1 - rho_y) with rho_y the ratio of the smaller to the larger row, or P(Y=y).
"""

import numpy as np
import scipy.optimize

METRICS = ("sp", "eo", "eodds")
MODELS = ("selective", "composition")


def counts(pred_N, y_N, a_N, num_classes: int, num_groups: int = 2) -> np.ndarray:
    """n_AxYxK: rows per (group, label, base prediction), float64."""
    n_AxYxK = np.zeros((num_groups, num_classes, num_classes))
    np.add.at(n_AxYxK, (np.asarray(a_N), np.asarray(y_N), np.asarray(pred_N)), 1.0)
    return n_AxYxK


def _rate_rows(n_AxYxK: np.ndarray, metric: str, classes) -> tuple[np.ndarray, np.ndarray]:
    """Rates of f_D as base_AxR + coef_AxRxV @ x (x flattened over (a, y, k)); R rates per group."""
    g, k, _ = n_AxYxK.shape
    classes = range(k) if classes is None else classes
    n_A, n_AxY = n_AxYxK.sum(axis=(1, 2)), n_AxYxK.sum(axis=2)
    move_YxKxC = np.eye(k)[:, None, :] - np.eye(k)[None, :, :]  # memorizing a (y, k) row: +1 on y, -1 on k
    rows = []  # (base_A, coef_AxV)
    if metric == "sp":
        for c in classes:
            coef = np.zeros((g, g, k, k))
            for a in range(g):
                coef[a, a] = move_YxKxC[:, :, c] / n_A[a]
            rows.append((n_AxYxK[:, :, c].sum(axis=1) / n_A, coef))
    elif metric in ("eo", "eodds"):
        pairs = [(c, c) for c in classes] if metric == "eo" else [(y, c) for y in range(k) for c in range(k) if c != y]
        for y, c in pairs:
            if np.any(n_AxY[:, y] == 0):
                continue
            coef = np.zeros((g, g, k, k))
            for a in range(g):
                if c == y:
                    coef[a, a, y] = 1.0 / n_AxY[a, y]
                    coef[a, a, y, y] = 0.0
                else:
                    coef[a, a, y, c] = -1.0 / n_AxY[a, y]
            rows.append((n_AxYxK[:, y, c] / n_AxY[:, y], coef))
    else:
        raise ValueError(f"metric={metric!r}: use one of {METRICS}.")
    if not rows:
        return np.zeros((g, 0)), np.zeros((g, 0, g * k * k))
    base_AxR = np.stack([b for b, _ in rows], axis=1)
    coef_AxRxV = np.stack([c.reshape(g, -1) for _, c in rows], axis=1)
    return base_AxR, coef_AxRxV


def gaps(n_AxYxK: np.ndarray, metric: str, classes=None, x_AxYxK: np.ndarray | None = None) -> np.ndarray:
    """Rates of every group minus group 0's, after memorizing x (default none): [A - 1, R]."""
    base_AxR, coef_AxRxV = _rate_rows(n_AxYxK, metric, classes)
    x_V = np.zeros(n_AxYxK.size) if x_AxYxK is None else np.asarray(x_AxYxK, float).reshape(-1)
    r_AxR = base_AxR + coef_AxRxV @ x_V
    return r_AxR[1:] - r_AxR[:1]


def zero_bias_lp(
    n_AxYxK: np.ndarray, metric: str, classes=None, model: str = "selective", *, largest: bool = True
) -> dict:
    """Least and largest memorized mass of a zero-bias set, and a least set.

    Returns feasible, min_mass, max_mass (fractions of all rows; nan if infeasible or not ``largest``), x_AxYxK
    (the least set's rows per cell, fractional) and, for the composition model, m_AxY (the memorized share of each
    (group, label) cell).
    """
    if model not in MODELS:
        raise ValueError(f"model={model!r}: use one of {MODELS}.")
    g, k, _ = n_AxYxK.shape
    n = n_AxYxK.sum()
    base_AxR, coef_AxRxV = _rate_rows(n_AxYxK, metric, classes)
    a_eq = (coef_AxRxV[1:] - coef_AxRxV[:1]).reshape(-1, n_AxYxK.size)
    b_eq = -(base_AxR[1:] - base_AxR[:1]).reshape(-1)
    if model == "selective":
        to_x = np.eye(n_AxYxK.size)  # variables are x itself
        upper = n_AxYxK.reshape(-1)
    else:  # variables m[a, y]; x[a, y, k] = m[a, y] n[a, y, k]
        to_x = np.zeros((n_AxYxK.size, g * k))
        for a in range(g):
            for y in range(k):
                to_x[(a * k + y) * k : (a * k + y + 1) * k, a * k + y] = n_AxYxK[a, y]
        upper = np.ones(g * k)
    mass = to_x.sum(axis=0) / n
    out = {"feasible": False, "min_mass": float("nan"), "max_mass": float("nan"), "x_AxYxK": None}
    kwargs = {"A_eq": a_eq @ to_x, "b_eq": b_eq, "bounds": np.stack([0 * upper, upper], axis=1), "method": "highs"}
    if a_eq.shape[0] == 0:
        kwargs.pop("A_eq"), kwargs.pop("b_eq")
    lo = scipy.optimize.linprog(mass, **kwargs)
    if lo.status != 0:
        if lo.status != 2:  # 2 = infeasible; anything else is a solver failure
            raise RuntimeError(f"linprog failed: {lo.message}")
        return out
    hi = scipy.optimize.linprog(-mass, **kwargs) if largest else None
    out.update(feasible=True, min_mass=float(lo.fun), x_AxYxK=(to_x @ lo.x).reshape(g, k, k))
    out["max_mass"] = float(-hi.fun) if largest else float("nan")
    if model == "composition":
        out["m_AxY"] = lo.x.reshape(g, k)
    return out


def _masses(n_AxYxK):
    n = n_AxYxK.sum()
    n_AxY = n_AxYxK.sum(axis=2)
    pi_AxYxK = np.divide(n_AxYxK, n_AxY[:, :, None], out=np.zeros_like(n_AxYxK), where=n_AxY[:, :, None] > 0)
    return n, n_AxY, pi_AxYxK


def sp_interval_condition(n_AxYxK: np.ndarray, classes=None) -> bool:
    """Necessary for a zero-SP memorized set (sufficient with two classes): every class's reachable intervals
    [P(f=c, Y=c | a), P(f=c or Y=c | a)] overlap across groups."""
    k = n_AxYxK.shape[1]
    n_A = n_AxYxK.sum(axis=(1, 2))
    for c in range(k) if classes is None else classes:
        lo_A = n_AxYxK[:, c, c] / n_A
        hi_A = (n_AxYxK[:, :, c].sum(axis=1) + n_AxYxK[:, c, :].sum(axis=1) - n_AxYxK[:, c, c]) / n_A
        if lo_A.max() > hi_A.min() + 1e-12:
            return False
    return True


def mass_bounds(n_AxYxK: np.ndarray, metric: str, classes=None) -> dict:
    """Closed-form bounds (two groups) on the least mass p* of a zero-bias memorized set: lower <= p* <= upper.

    ``upper`` is nan where no zero-bias set exists (sp: the interval condition fails). For eo and eodds, ``lower``
    is the selective model's exact least mass and ``upper`` the composition model's.
    """
    if n_AxYxK.shape[0] != 2:
        raise ValueError("mass_bounds: closed forms are for two groups.")
    k = n_AxYxK.shape[1]
    cls = list(range(k) if classes is None else classes)
    n, n_AxY, pi_AxYxK = _masses(n_AxYxK)
    p_A = n_AxYxK.sum(axis=(1, 2)) / n
    if metric == "sp":
        gap_C = np.abs(gaps(n_AxYxK, "sp", cls)[0])
        lower = p_A.min() * max(gap_C.max(initial=0.0), gap_C.sum() / 2.0)
        if not sp_interval_condition(n_AxYxK, cls):
            return {"lower": float(lower), "upper": float("nan"), "feasible": False}
        err = 1.0 - np.trace(n_AxYxK.sum(axis=0)) / n
        upper = p_A.max() * gap_C.max(initial=0.0) if k == 2 else err
        return {"lower": float(lower), "upper": float(upper), "feasible": True}
    if metric == "eo":
        lower = upper = 0.0
        for c in cls:
            t_A = pi_AxYxK[:, c, c]
            lo = int(np.argmin(t_A))
            cell = n_AxY[lo, c] / n * (t_A.max() - t_A.min())
            lower += cell
            upper += cell / (1.0 - t_A[lo]) if cell > 0 else 0.0
        return {"lower": float(lower), "upper": float(upper), "feasible": True}
    if metric == "eodds":
        off_AxYxK = pi_AxYxK * (1.0 - np.eye(k))[None]
        hi_YxK = np.argmax(off_AxYxK, axis=0)
        p_hi_YxK = np.take_along_axis(n_AxY[:, :, None] / n, hi_YxK[None], axis=0)[0]
        lower = float((p_hi_YxK * np.abs(off_AxYxK[0] - off_AxYxK[1])).sum())
        cond = equalized_odds_condition(n_AxYxK)
        return {"lower": lower, "upper": cond["composition_min_mass"], "feasible": True}
    raise ValueError(f"metric={metric!r}: use one of {METRICS}.")


def equalized_odds_condition(n_AxYxK: np.ndarray, rtol: float = 1e-9) -> dict:
    """The ratio condition for equalized odds under composition-only memorization (two groups).

    Per label y: proportional (pi_{.|y,lo} = rho pi_{.|y,hi} off the diagonal, hi the group with the larger
    off-diagonal mass), rho, and the least memorized shares m_{y,a} (1 - rho on hi, 0 on lo; 1 on both when the
    rows are not proportional). Returns holds (every row proportional), per-label lists, composition_min_mass.
    """
    k = n_AxYxK.shape[1]
    n, n_AxY, pi_AxYxK = _masses(n_AxYxK)
    prop_Y, rho_Y, m_YxA, mass = [], [], np.zeros((k, 2)), 0.0
    for y in range(k):
        off_AxK = np.delete(pi_AxYxK[:, y], y, axis=1)
        hi = int(np.argmax(off_AxK.sum(axis=1)))
        tot = off_AxK[hi].sum()
        rho = off_AxK[1 - hi].sum() / tot if tot > 0 else 1.0
        prop = bool(np.allclose(off_AxK[1 - hi], rho * off_AxK[hi], rtol=rtol, atol=1e-12))
        if prop:
            m_YxA[y, hi] = 1.0 - rho
        else:
            m_YxA[y] = 1.0
        mass += float((m_YxA[y] * n_AxY[:, y]).sum() / n)
        prop_Y.append(prop)
        rho_Y.append(float(rho))
    return {
        "holds": bool(all(prop_Y)),
        "proportional_Y": prop_Y,
        "rho_Y": rho_Y,
        "m_YxA": m_YxA,
        "composition_min_mass": mass,
    }


def rounding_bound(n_AxYxK: np.ndarray, metric: str, x_AxYxK: np.ndarray, classes=None) -> float:
    """The largest |gap| that rounding x to whole rows can add: max over rates of sum |round(x) - x| |d gap / d x|.

    For eodds the rates include the TPRs (the diagonal, implied by the off-diagonal entries in the LP).
    """
    _, coef_AxRxV = _rate_rows(n_AxYxK, metric, classes)
    if metric == "eodds":
        coef_AxRxV = np.concatenate([coef_AxRxV, _rate_rows(n_AxYxK, "eo", None)[1]], axis=1)
    d_V = np.abs(np.round(x_AxYxK) - x_AxYxK).reshape(-1)
    return float((np.abs(coef_AxRxV[1:] - coef_AxRxV[:1]) @ d_V).max(initial=0.0))


def realise(pred_N, y_N, a_N, x_AxYxK: np.ndarray, seed: int) -> np.ndarray:
    """A memorized set with round(x) rows of every (group, label, prediction) cell, chosen by a seeded shuffle."""
    pred_N, y_N, a_N = (np.asarray(v) for v in (pred_N, y_N, a_N))
    rng = np.random.default_rng(seed)
    in_D_N = np.zeros(len(y_N), bool)
    for a, y, k in zip(*np.nonzero(np.round(x_AxYxK) > 0), strict=True):
        rows = np.flatnonzero((a_N == a) & (y_N == y) & (pred_N == k))
        in_D_N[rng.permutation(rows)[: int(np.round(x_AxYxK[a, y, k]))]] = True
    return in_D_N
