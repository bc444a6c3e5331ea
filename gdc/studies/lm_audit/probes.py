"""Activation probes for memorized tokens (Slonski), with a cross-canary split, and the probe direction to ablate.

Token labels are counterfactual: a token of a canary is *memorized* when the target model's greedy next-token
prediction reproduces it and a reference model trained without that canary does not. Negatives are the canary
tokens both models reproduce (predictable from the rest of the corpus), so the probe must separate memorization
from mere correctness; tokens the target gets wrong are left out of training (and scored as a second negative set).

Probes are scikit-learn logistic regressions on standardized hidden states, one per layer. The split is by canary:
every fold's test canaries contribute no token to its training set (sklearn ``GroupKFold``), and AUROC is computed
on the pooled out-of-fold scores. The ablation direction is the probe's normal in raw activation space
(``coef / scale``, unit norm), fitted on all canaries.
"""

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

MEMORIZED, PREDICTABLE, EXCLUDED = 1, 0, -1


def token_labels(target_correct_NxL: np.ndarray, reference_correct_NxL: np.ndarray) -> np.ndarray:
    """int8 [N, L]: 1 memorized (target right, reference wrong), 0 predictable (both right), -1 otherwise."""
    t, r = np.asarray(target_correct_NxL, bool), np.asarray(reference_correct_NxL, bool)
    labels = np.full(t.shape, EXCLUDED, np.int8)
    labels[t & r] = PREDICTABLE
    labels[t & ~r] = MEMORIZED
    return labels


def _probe(c: float, seed: int):
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=seed))


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


def cross_canary_probes(
    hidden_LyxNxLxD: np.ndarray,
    labels_NxL: np.ndarray,
    *,
    folds: int = 4,
    c: float = 1.0,
    seed: int = 0,
) -> dict:
    """Per-layer probe AUROC on held-out canaries.

    Args:
        hidden_LyxNxLxD: activations of Ly layers for N canaries of L positions (position t predicts token t + 1).
        labels_NxL: ``token_labels`` of the predicted tokens.
        folds: GroupKFold folds over canaries (clipped to the number of canaries with a labelled token).
        c: inverse L2 strength of the logistic regression.
        seed: solver seed.

    Returns:
        ``auroc_K`` (memorized vs predictable, pooled out-of-fold), ``auroc_wrong_K`` (memorized vs tokens the target
        gets wrong, scored by the same out-of-fold probes), ``oof_score_KxNxL`` (out-of-fold memorization probability
        of every token; NaN where the canary had no labelled token), ``num_pos``, ``num_neg``, ``folds``. These keys
        predate the legend: their K is the Ly layers (``gdc.types``).
    """
    num_layers, n, length, d = hidden_LyxNxLxD.shape
    labels_NxL = np.asarray(labels_NxL)
    seq_N = np.arange(n)
    has_N = (labels_NxL >= 0).any(axis=1)
    folds = int(min(folds, has_N.sum()))
    if folds < 2 or not (labels_NxL == MEMORIZED).any() or not (labels_NxL == PREDICTABLE).any():
        raise ValueError("probes need memorized and predictable tokens in at least two canaries.")
    flat_y = labels_NxL.reshape(-1)
    groups = np.repeat(seq_N, length)
    oof = np.full((num_layers, n * length), np.nan)
    splitter = GroupKFold(n_splits=folds)
    train_rows = np.flatnonzero(flat_y >= 0)
    for layer in range(num_layers):
        x = hidden_LyxNxLxD[layer].reshape(n * length, d)
        for tr, _ in splitter.split(train_rows, flat_y[train_rows], groups[train_rows]):
            fit_rows = train_rows[tr]
            if len(np.unique(flat_y[fit_rows])) < 2:
                continue
            held = np.flatnonzero(~np.isin(groups, np.unique(groups[fit_rows])))
            probe = _probe(c, seed).fit(x[fit_rows], flat_y[fit_rows])
            oof[layer, held] = probe.predict_proba(x[held])[:, 1]
    pos, neg = flat_y == MEMORIZED, flat_y == PREDICTABLE
    wrong = flat_y == EXCLUDED
    auroc, auroc_wrong = [], []
    for layer in range(num_layers):
        ok = ~np.isnan(oof[layer])
        sel = ok & (pos | neg)
        auroc.append(_auroc(pos[sel].astype(int), oof[layer][sel]))
        sel_w = ok & (pos | wrong)
        auroc_wrong.append(_auroc(pos[sel_w].astype(int), oof[layer][sel_w]))
    return {
        "auroc_K": np.array(auroc),
        "auroc_wrong_K": np.array(auroc_wrong),
        "oof_score_KxNxL": oof.reshape(num_layers, n, length),
        "num_pos": int(pos.sum()),
        "num_neg": int(neg.sum()),
        "folds": folds,
    }


def probe_direction(
    hidden_NxLxD: np.ndarray, labels_NxL: np.ndarray, *, c: float = 1.0, seed: int = 0
) -> tuple[np.ndarray, object]:
    """Fits one probe on every labelled token of one layer.

    Returns:
        (u_D unit-norm normal of the decision boundary in raw activation space, the fitted sklearn pipeline).
    """
    d = hidden_NxLxD.shape[-1]
    y = np.asarray(labels_NxL).reshape(-1)
    x = hidden_NxLxD.reshape(-1, d)
    rows = y >= 0
    probe = _probe(c, seed).fit(x[rows], y[rows])
    scaler, logreg = probe[0], probe[-1]
    w_D = logreg.coef_[0] / scaler.scale_
    return (w_D / np.linalg.norm(w_D)).astype(np.float32), probe


def mean_difference_direction(hidden_NxLxD: np.ndarray, labels_NxL: np.ndarray) -> np.ndarray:
    """Unit vector from the mean activation of predictable tokens to that of memorized tokens (f32 [D])."""
    d = hidden_NxLxD.shape[-1]
    x, y = hidden_NxLxD.reshape(-1, d), np.asarray(labels_NxL).reshape(-1)
    v_D = x[y == MEMORIZED].mean(axis=0) - x[y == PREDICTABLE].mean(axis=0)
    return (v_D / np.linalg.norm(v_D)).astype(np.float32)


def project_out(x_NxD: np.ndarray, u_D: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """``x - alpha (x . u) u`` in numpy (the model-side version is ``gdc.models.char_lm.ablate_direction``)."""
    u_D = np.asarray(u_D, np.float64) / np.linalg.norm(u_D)
    return x_NxD - alpha * (x_NxD @ u_D)[..., None] * u_D


def sequence_scores(probe, hidden_NxLxD: np.ndarray) -> np.ndarray:
    """Mean probe probability of 'memorized' over each sequence's positions: f64 [N]."""
    n, length, d = hidden_NxLxD.shape
    return probe.predict_proba(hidden_NxLxD.reshape(-1, d))[:, 1].reshape(n, length).mean(axis=1)
