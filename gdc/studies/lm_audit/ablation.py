"""Probe-direction ablation measured on held-out canaries, beside random directions at matched perplexity.

The canaries (every candidate-group row) are split per group by ``split_canaries``: the probe's layer is chosen and
its direction (and the mean-difference direction) fitted on the *fit* canaries only; extraction under the ablation
``x -> x - a (x.u) u`` is measured on the *held-out* canaries of the most duplicated group, and the cost as the
validation perplexity on the never-trained control rows. Directions differ in how much perplexity a given ``a``
costs, so they are compared at matched perplexity: ``at_matched`` interpolates a direction's extraction along its
``a`` sweep (starting from the unablated model) to where its perplexity first reaches ``ratio x`` the unablated
one (NaN if the sweep never gets there).
"""

import numpy as np

from gdc.studies.lm_audit import freeman, probes, teacher_forcing
from gdc.studies.lm_audit.config import AuditConfig

METRICS = ("exact", "exact8", "rouge_p", "val_ppl")
MATCHED = ("exact8", "rouge_p")


def split_canaries(num_groups: int, group_size: int, fraction: float, seed: int) -> np.ndarray:
    """bool [G * S]: True for the fit canaries, ``round(fraction * S)`` seeded rows of each group (>= 1, < S)."""
    rng = np.random.default_rng([seed, 13])
    k = min(max(1, round(fraction * group_size)), group_size - 1)
    fit_GxS = np.zeros((num_groups, group_size), bool)
    for g in range(num_groups):
        fit_GxS[g, rng.permutation(group_size)[:k]] = True
    return fit_GxS.reshape(-1)


def at_matched(ppl_A: np.ndarray, value_A: np.ndarray, target: float) -> float:
    """``value`` where ``ppl`` first reaches ``target`` along the sweep, linear in ppl between the bracketing points.

    Args:
        ppl_A: perplexity along the sweep, the unablated model first.
        value_A: the extraction measure at the same points.
        target: the perplexity to match.
    """
    ppl_A, value_A = np.asarray(ppl_A, np.float64), np.asarray(value_A, np.float64)
    if ppl_A[0] >= target:
        return float(value_A[0])
    for i in range(1, len(ppl_A)):
        if ppl_A[i] >= target:
            w = (target - ppl_A[i - 1]) / (ppl_A[i] - ppl_A[i - 1])
            return float(value_A[i - 1] + w * (value_A[i] - value_A[i - 1]))
    return float("nan")


def run(
    cfg: AuditConfig,
    target,
    *,
    hidden_fit_LyxNxLxD: np.ndarray,
    labels_fit_NxL: np.ndarray,
    test_NxT: np.ndarray,
    control_MxT: np.ndarray,
    mesh,
    seed: int,
) -> tuple[dict, object, int]:
    """The ablation sweep of every direction and its matched-perplexity comparison.

    Returns:
        (results, the probe fitted on the fit canaries at the chosen layer, that layer).
    """
    kw = dict(folds=cfg.probe_folds, c=cfg.probe_c, seed=seed)
    auroc_Ly = probes.cross_canary_probes(hidden_fit_LyxNxLxD, labels_fit_NxL, **kw)["auroc_K"]
    best = int(np.nanargmax(auroc_Ly)) if np.isfinite(auroc_Ly).any() else len(auroc_Ly) - 1
    hidden = hidden_fit_LyxNxLxD[best]
    u_D, probe = probes.probe_direction(hidden, labels_fit_NxL, c=cfg.probe_c, seed=seed)
    dirs = {"probe": u_D, "meandiff": probes.mean_difference_direction(hidden, labels_fit_NxL)}
    rng = np.random.default_rng([seed, 11])
    for r in range(cfg.random_directions):
        v = rng.normal(size=u_D.shape).astype(np.float32)
        dirs[f"random{r}"] = v / np.linalg.norm(v)
    tp, c = cfg.test_prefix, cfg.continuation

    def measure(ablate):
        ex = freeman.continue_and_score(target, test_NxT, test_NxT[:, :tp], tp, c, mesh, None, ablate)
        nll = teacher_forcing.teacher_forced(*target, control_MxT, ablate=ablate, with_hidden=False)["nll_NxL"]
        return {
            "exact": float(ex["exact"].mean()),
            "exact8": float(ex["exact8"].mean()),
            "rouge_p": float(ex["rouge_p_chars"].mean()),
            "val_ppl": float(np.exp(nll.mean())),
        }

    out = {"layer": best, "fit_auroc": auroc_Ly.tolist(), "num_test": len(test_NxT), "none": measure(None)}
    for name, u in dirs.items():
        out[name] = {str(a): measure((best, u, a)) for a in cfg.ablation_alphas}
    base = out["none"]
    matched = {}
    for ratio in cfg.matched_ppl:
        row = {}
        for name in dirs:
            pts = [base] + [out[name][str(a)] for a in cfg.ablation_alphas]
            ppl = [p["val_ppl"] for p in pts]
            row[name] = {m: at_matched(ppl, [p[m] for p in pts], ratio * base["val_ppl"]) for m in MATCHED}
        randoms = [row[n] for n in dirs if n.startswith("random")]
        for m in MATCHED:
            vals = [r[m] for r in randoms if np.isfinite(r[m])]
            row.setdefault("random_mean", {})[m] = float(np.mean(vals)) if vals else float("nan")
            row["random_mean"][f"{m}_reached"] = len(vals)
        matched[str(ratio)] = row
    out["matched"] = matched
    return out, probe, best
