"""The paper's claims checked on a study's evaluations, and every scored arm against its random control.

``evals`` maps an arm's name to ``{seed: its evals/<arm>.json record}``; replicates of a random control are named
``<group>#<r>`` and pooled under ``<group>``. Extraction counts are pooled over seeds (and replicates) with Wilson 95%
intervals; an arm is compared with its random control seed by seed. The statistics and the verdict rule are
``gdc.studies.carto.verdicts``; this module names the claims (arms, metrics, claimed levels) and applies them.
"""

import collections
import re

import numpy as np

from gdc.studies.carto.verdicts import mean_interval, reduction_verdict, wilson, within_seed_permutation

PAPER_A = (
    "canary extraction 100% -> 40% after pruning the top 5% by m, validation perplexity +0.5%; >40% reduction at 10%"
)
PAPER_B = "down-weighting hotspots (alpha = 0.5): leakage -30%, MIA AUC -15%, validation perplexity < +1%"
EXTRACTION = {"greedy": "inserted_extracted_count", "digits": "inserted_rank1_count"}
EXTRACTION_LABEL = {
    "greedy": "greedy extraction",
    "digits": "digit-constrained extraction: the secret is the most likely of all 10^d digit strings",
}


def arm_group(name: str) -> str:
    """``prune_random@5#2`` -> ``prune_random@5`` (replicates pooled)."""
    return re.sub(r"#\d+", "", name)


def extraction_rate(row: dict, kind: str = "greedy") -> tuple[float, float, float]:
    """A table row's pooled ``kind`` extraction: (rate, Wilson 95% low, high); NaNs where the row has none."""
    p = row.get(f"extraction_{kind}")
    if not p:
        return float("nan"), float("nan"), float("nan")
    return p["extracted"] / p["total"], *p["wilson95"]


def _per_seed(evals: dict, arm: str, key: str) -> dict[int, float]:
    return {s: float(r[key]) for s, r in evals.get(arm, {}).items() if key in r}


def _replicates(evals: dict, group: str, key: str) -> dict[int, list[float]]:
    """Per seed, the values of every replicate ``group#r``."""
    out: dict[int, list[float]] = collections.defaultdict(list)
    for name in sorted(evals):
        if arm_group(name) == group and name != group:
            for s, v in _per_seed(evals, name, key).items():
                out[s].append(v)
    return dict(out)


def compare(evals: dict, arm: str, control: str, key: str) -> dict:
    """The arm against its random control's replicates on ``key`` (lower = less memorization), seeds paired."""
    a, c = _per_seed(evals, arm, key), _replicates(evals, control, key)
    seeds = sorted(set(a) & set(c))
    test = within_seed_permutation([a[s] for s in seeds], [c[s] for s in seeds])
    return {"seeds": seeds, "arm": [a[s] for s in seeds], "control": [c[s] for s in seeds], **test}


def pooled_extraction(evals: dict, group: str, count_key: str) -> dict:
    """Extraction pooled over seeds (and replicates) with its Wilson interval."""
    recs = [r for name, per in evals.items() if arm_group(name) == group for r in per.values() if count_key in r]
    k = sum(r[count_key] for r in recs)
    n = sum(r.get("inserted_num_canaries", 0.0) for r in recs)
    lo, hi = wilson(k, n)
    return {"extracted": k, "total": n, "rate": k / n if n else float("nan"), "wilson95": [lo, hi]}


def _ppl_claim(evals: dict, arm: str, limit: float) -> dict:
    """Relative validation-perplexity change of ``arm`` against the baseline, per seed; t-interval; the claim that
    it is at most ``limit``."""
    key = "heldout_perplexity_token"
    base, a = _per_seed(evals, "baseline", key), _per_seed(evals, arm, key)
    rel = [a[s] / base[s] - 1 for s in sorted(set(a) & set(base))]
    mean, lo, hi = mean_interval(rel)
    if not rel:
        v = "not testable"
    elif mean <= limit:
        v = "reproduced"
    elif np.isfinite(lo) and lo > limit:
        v = "contradicted"
    else:
        v = "not reproduced"
    return {"verdict": v, "change": rel, "mean": mean, "t95": [lo, hi], "claimed_at_most": limit}


CLAIMS_A = {  # fraction -> (claimed post-prune extraction as a share of the baseline's, perplexity limit)
    "5": (0.4, 0.005),  # body: 100% -> 40%, perplexity +0.5%
    "10": (0.6, 0.005),  # abstract: "over 40%" reduction at 10% pruning, perplexity < +0.5%
}


def verdicts(evals: dict) -> dict[str, dict]:
    """Every claim's verdict with the numbers behind it (see ``gdc.studies.carto.verdicts``)."""
    out: dict[str, dict] = {}
    if "baseline" not in evals:
        return out
    for kind, count_key in EXTRACTION.items():
        base = pooled_extraction(evals, "baseline", count_key)
        if not base["total"]:
            continue
        for frac, (share, ppl_limit) in CLAIMS_A.items():
            arm = f"prune_m@{frac}"
            if arm not in evals:
                continue
            pooled = pooled_extraction(evals, arm, count_key)
            ctrl = pooled_extraction(evals, f"prune_random@{frac}", count_key)
            test = compare(evals, arm, f"prune_random@{frac}", count_key)
            claimed = share * base["rate"]
            v = reduction_verdict(
                base_rate=base["rate"],
                rate=pooled["rate"],
                interval=tuple(pooled["wilson95"]),
                claimed_rate=claimed,
                p_vs_random=test["p_value"],
            )
            out[f"A{frac}_{kind}"] = {
                "claim": f"pruning the top {frac}% by m lowers {EXTRACTION_LABEL[kind]} to <= {share:.0%} of the "
                "baseline's",
                "verdict": v,
                "baseline": base,
                "arm": pooled,
                "random": ctrl,
                "claimed_rate": claimed,
                "vs_random": test,
            }
            if kind == "greedy":
                out[f"A{frac}_perplexity"] = {
                    "claim": f"pruning the top {frac}% by m costs at most +{ppl_limit:.1%} validation perplexity",
                    **_ppl_claim(evals, arm, ppl_limit),
                }
    if "downweight_hotspot" in evals:
        out.update(_verdicts_b(evals))
    return out


def _verdicts_b(evals: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    arm, ctrl = "downweight_hotspot", "downweight_random"
    base = pooled_extraction(evals, "baseline", EXTRACTION["greedy"])
    pooled = pooled_extraction(evals, arm, EXTRACTION["greedy"])
    test = compare(evals, arm, ctrl, EXTRACTION["greedy"])
    claimed = 0.7 * base["rate"]
    out["B_leakage"] = {
        "claim": "down-weighting hotspots (alpha 0.5) lowers greedy extraction by >= 30% (relative)",
        "verdict": reduction_verdict(
            base_rate=base["rate"],
            rate=pooled["rate"],
            interval=tuple(pooled["wilson95"]),
            claimed_rate=claimed,
            p_vs_random=test["p_value"],
        ),
        "baseline": base,
        "arm": pooled,
        "random": pooled_extraction(evals, ctrl, EXTRACTION["greedy"]),
        "claimed_rate": claimed,
        "vs_random": test,
    }
    key = "mia_canary_secret_auc"
    b, a = _per_seed(evals, "baseline", key), _per_seed(evals, arm, key)
    rel = [a[s] / b[s] - 1 for s in sorted(set(a) & set(b))]
    mean, lo, hi = mean_interval(rel)
    test = compare(evals, arm, ctrl, key)
    if not rel:
        v = "not testable"
    elif mean <= -0.15 and np.isfinite(test["p_value"]) and test["p_value"] < 0.05:
        v = "reproduced"
    elif np.isfinite(lo) and lo > -0.15:
        v = "contradicted"
    else:
        v = "not reproduced"
    out["B_mia"] = {
        "claim": "down-weighting hotspots lowers the canary MIA AUC by >= 15% (relative)",
        "verdict": v,
        "change": rel,
        "mean": mean,
        "t95": [lo, hi],
        "vs_random": test,
    }
    out["B_perplexity"] = {
        "claim": "down-weighting hotspots costs under +1% validation perplexity",
        **_ppl_claim(evals, arm, 0.01),
    }
    return out


def arm_tests(evals: dict) -> dict[str, dict]:
    """Every scored prune or down-weight arm against its random control, on greedy extraction and exposure."""
    out = {}
    for name in sorted(evals):
        # Only scored prunes and down-weights have a random control (drop_noisy and upsample_hard have none).
        if "#" in name or "random" in name or not name.startswith(("prune_", "downweight_")):
            continue
        base, tm = name.split("+")[0], "+tm" if name.endswith("+tm") else ""
        control = (f"prune_random@{base.split('@')[1]}" if "@" in base else "downweight_random") + tm
        if not _replicates(evals, control, EXTRACTION["greedy"]):
            continue
        out[name] = {
            key: compare(evals, name, control, key)
            for key in (EXTRACTION["greedy"], "inserted_exposure_mean")
            if _per_seed(evals, name, key)
        }
        out[name]["control"] = control
    return out
