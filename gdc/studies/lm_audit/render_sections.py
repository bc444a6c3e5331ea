"""The sections of the LM audit's report.md (``render`` assembles them) and their number formats: ``_f`` mean ± sd
over seeds, ``_ci`` mean [95% t-interval over seeds], ``_wilson`` pooled k/n [Wilson interval]."""

import numpy as np

from gdc.studies.lm_audit.config import AuditConfig

QUADRANTS = ("Stable-Easy", "Ambiguous-Hard", "Hotspot-Memorized", "Noisy-Outlier")
SWEEP_METRICS = ("lcs_chars", "lcs_row", "lcs_corpus", "rouge_p_chars", "exact8")
TEST_NAMES = {
    "test_prefix": "true prefix (no inducer)",
    "test_inducer_tuned": "inducer (rejection-sampled)",
    "test_inducer_control": "control inducer (not fine-tuned)",
}


def _f(d: dict, digits: int = 2) -> str:
    if not d["n"]:
        return "n/a"
    if abs(d["mean"]) >= 1e4:  # exploded perplexities
        return f"{d['mean']:.2g} ± {d['sd']:.2g}"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}"


def _ci(d: dict, digits: int = 3, seeds: int = 0) -> str:
    """mean [lo, hi]; with ``seeds``, "(n = k)" is added when only k < seeds seeds have a value."""
    if not d["n"]:
        return "n/a"
    if d["n"] < 2:
        return f"{d['mean']:.{digits}f} (n = 1)"
    n = f" (n = {d['n']})" if d["n"] < seeds else ""
    return f"{d['mean']:.{digits}f} [{d['lo']:.{digits}f}, {d['hi']:.{digits}f}]{n}"


def _pair(a, b) -> str:
    def one(x):
        return f"{x:.3f}" if isinstance(x, (int, float)) and np.isfinite(x) else "NaN"

    return f"({one(a)}, {one(b)})"


def _wilson(e: dict) -> str:
    return f"{e['k']}/{e['n']} = {e['rate']:.3f} [{e['lo']:.3f}, {e['hi']:.3f}]"


def matched_verdict(d: dict, what: str) -> str:
    """Reads a probe - random difference at matched perplexity (lower = the probe removes more extraction)."""
    if d["n"] < 2 or not np.isfinite(d["lo"]):
        return f"{what}: too few seeds reach this perplexity to compare"
    if d["hi"] < 0:
        return f"{what}: the probe direction removes more than random directions (interval below 0)"
    if d["lo"] > 0:
        return f"{what}: random directions remove more than the probe direction (interval above 0)"
    return f"{what}: probe and random directions overlap (the interval includes 0)"


def _gap_rows(label: str, block: dict, ks, n: int) -> list[str]:
    out = []
    for m in SWEEP_METRICS:
        b = block[m]
        cells = [f"{_f(b['groups'][g])} ({b['groups_ci_excludes_0'][g]}/{n})" for g in range(len(ks))]
        out.append(f"| {label} | {m} | " + " | ".join(cells) + f" | {_f(b['ordinary'])} | {_f(b['control_mean'])} |")
    return out


def extraction(cfg: AuditConfig, res: dict) -> list[str]:
    ks, n = cfg.dup_counts, len(res["seeds"])
    head = "| {} | metric | " + " | ".join(f"dup {k}" for k in ks) + " | ordinary train rows | control mean |"
    sep = "|---|---|" + "---|" * len(ks) + "---|---|"
    lines = [
        "## 1. Extraction protocol (Freeman et al.): train - control gaps",
        "",
        "Metrics of the greedy continuation: `lcs_chars`, the longest common substring with the row's aligned "
        "continuation (the former score); `lcs_row`, with the whole row the prompt came from (Freeman et al.'s "
        "comparison with the whole article; the row holds the prompt too, so repeating the prompt counts); "
        "`lcs_corpus`, with the whole training text (every trained row); `rouge_p_chars`, character ROUGE-L "
        "precision against the aligned continuation; `exact8`, the first 8 characters exact. (n/N): seeds whose 95% "
        "bootstrap interval of the gap lies above 0.",
        "",
        head.format("prefix"),
        sep,
    ]
    for p, block in res["prefix_sweep"].items():
        lines += _gap_rows(p, block, ks, n)
    lines += ["", "![prefix sweep](prefix_sweep.png)", "", "Prompt templates (prompt length in characters):", ""]
    lines += [head.format("template"), sep]
    for t, block in res["templates"].items():
        lines += _gap_rows(f"{t} ({res['templates_prompt_len'][t]})", block, ks, n)
    lines += [
        "",
        "How the templates map to the paper's three attacks (a character model has no instructions): `request` = "
        f"the row's first {cfg.template_cue} characters only (the paper's request names the article; our rows have "
        f"no titles, the cue is the least text that identifies one); `chat` = {cfg.template_context} characters of "
        "never-trained text, different per row (the generic conversational exchange), then the cue; `roleplay` = one "
        f"fixed never-trained passage of {cfg.template_context} characters (the framing, the same for every row), then "
        f"the row's prefix, {cfg.max_allowed_prefix} characters in all (the longest prompt a row allows before a "
        f"{cfg.continuation}-character continuation); `prefix` = that article prefix alone, roleplay's plain "
        f"counterpart. Framings per seed: {[repr(x) for x in res['templates_framing']]}.",
        "",
        f"Model size (prefix {cfg.test_prefix}, whole-row LCSubstring gap in characters; aligned in brackets):",
        "",
        "| model | " + " | ".join(f"dup {k}" for k in ks) + " |",
        "|---|" + "---|" * len(ks),
    ]
    for size, block in res["size_sweep"].items():
        cells = [f"{_f(block['lcs_row'][g])} ({_f(block['lcs_chars'][g])})" for g in range(len(ks))]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines + ["", "![size sweep](size_sweep.png)", ""]


def dataset_test(cfg: AuditConfig, res: dict, power_table) -> list[str]:
    lines = [
        f"## 2. Dataset-level test (MemHunter), alpha = {cfg.alpha}",
        "",
        f"Each of {cfg.power_reps} repetitions per seed draws S (|S| rows) from a group of {cfg.group_size} rows, so S "
        f"varies, and as many control rows from the {cfg.num_control} never-trained rows; the false-positive rate "
        "draws both sets, disjoint, from the never-trained rows. One-sided Mann-Whitney (MW) and Welch tests; "
        "rejection rates as mean [95% t-interval over seeds]. Per-row scores: *true prefix*, character ROUGE-L "
        f"precision of the continuation of the row's first {cfg.test_prefix} characters; *inducer*, the longest "
        f"substring of the whole row found in the continuations of {cfg.inducer_eval} inducer prompts (section 3), "
        "which needs no access to the row at all.",
        "",
    ]
    for key, title in TEST_NAMES.items():
        lines += [f"**{title}**, Mann-Whitney:", "", *power_table(res["tests"][key], cfg.dup_counts, "mannwhitney"), ""]
    lines += ["**true prefix**, Welch:", "", *power_table(res["tests"]["test_prefix"], cfg.dup_counts, "welch"), ""]
    return lines + ["![power](power.png)", ""]


def inducer(cfg: AuditConfig, res: dict) -> list[str]:
    ind = res["inducer"]
    rounds = len(ind["tuned"]["accept_rate"])
    lines = [
        "## 3. MemHunter's inducer",
        "",
        f"A character GRU ({cfg.inducer_width} units) pre-trained for {cfg.inducer_pretrain_steps} steps on windows of "
        f"the held-out split (public text no model here trains on) writes {cfg.inducer_prompt}-character prompts; "
        f"the target continues each by {cfg.continuation} characters. Each of {rounds} rounds samples "
        f"{cfg.inducer_per_round} prompts, accepts those whose continuation shares >= {cfg.inducer_threshold:g} "
        "consecutive characters with the *ordinary* training rows (the rows the auditor is given; the candidate groups "
        f"are never in the reward) and fine-tunes the inducer for {cfg.inducer_fit_steps} steps on every prompt "
        "accepted so far. The control inducer runs the same rounds with the same keys and is never fine-tuned. "
        f"Pre-training loss (first, last) per seed: {[[round(x, 2) for x in v] for v in ind['pretrain_loss']]}.",
        "",
        "| round | " + " | ".join(str(r) for r in range(rounds)) + " |",
        "|---|" + "---|" * rounds,
    ]
    for arm in ("tuned", "control"):
        lines.append(f"| acceptance, {arm} | " + " | ".join(_ci(d) for d in ind[arm]["accept_rate"]) + " |")
        lines.append(f"| mean reward (chars), {arm} | " + " | ".join(_ci(d, 2) for d in ind[arm]["reward_mean"]) + " |")
    names = list(ind["tuned"]["extracted"])
    lines += [
        "",
        f"Last-round acceptance, inducer - control, paired by seed: {_ci(ind['accept_last_tuned_minus_control'])}.",
        "",
        f"Extraction with {cfg.inducer_eval} prompts per inducer and seed: rows holding >= {cfg.extract_chars} "
        "consecutive characters that some continuation emits, pooled over seeds (Wilson); never-trained rows are the "
        "null (generic text both share). tuned - control: the per-seed difference of the extracted fraction, "
        "[95% t-interval].",
        "",
        "| rows | inducer | control inducer | tuned - control |",
        "|---|---|---|---|",
    ]
    for name in names:
        lines.append(
            f"| {name} | {_wilson(ind['tuned']['extracted'][name])} | {_wilson(ind['control']['extracted'][name])} | "
            f"{_ci(ind['tuned_minus_control'][name])} |"
        )
    lines += [
        "",
        f"Distinct evaluation prompts per seed: inducer {ind['tuned']['distinct_prompts']}, control "
        f"{ind['control']['distinct_prompts']}. Mean reward of the evaluation continuations: inducer "
        f"{_ci(ind['tuned']['eval_reward_mean'], 2)}, control {_ci(ind['control']['eval_reward_mean'], 2)}. Best "
        "prompt -> continuation per seed (inducer): "
        + "; ".join(f"{b['prompt']!r} -> {b['continuation']!r} ({b['reward']:g})" for b in ind["tuned"]["best"])
        + ".",
        "",
        "![inducer](inducer.png)",
        "",
    ]
    return lines


def probes(cfg: AuditConfig, res: dict) -> list[str]:
    ks, pr, abl = cfg.dup_counts, res["probe"], res["ablation"]
    lines = [
        "## 4. Activation probes (Slonski) and ablation",
        "",
        "Token labels: memorized = target reproduces the token (teacher-forced argmax) and the reference model trained "
        "without the canaries does not; negatives = both reproduce it. Cross-canary GroupKFold "
        f"({cfg.probe_folds} folds) over every canary.",
        "",
        "| layer | AUROC memorized vs predictable | AUROC memorized vs target-wrong | same labels, reference model |",
        "|---|---|---|---|",
    ]
    for i, (a, b, r) in enumerate(zip(pr["auroc"], pr["auroc_vs_wrong"], pr["auroc_reference_model"], strict=True)):
        lines.append(f"| {i} | {_f(a, 3)} | {_f(b, 3)} | {_f(r, 3)} |")
    lines += [
        "",
        f"Labelled tokens per seed: memorized {pr['num_memorized']}, predictable {pr['num_predictable']}. "
        "Memorized-token fraction by duplication: "
        + ", ".join(f"dup {k}: {_f(pr['memorized_frac_by_group'][g], 3)}" for g, k in enumerate(ks))
        + ". Teacher-forced accuracy target / reference: "
        + ", ".join(
            f"dup {k}: {_f(pr['target_acc_by_group'][g])} / {_f(pr['reference_acc_by_group'][g])}"
            for g, k in enumerate(ks)
        )
        + ".",
        "",
        f"Ablation x -> x - a (x.u) u. The layer (per seed {pr['best_layer']}) and the probe and mean-difference "
        f"directions are fitted on {cfg.probe_fit_fraction:g} of the canaries of every group; extraction is measured "
        f"on the *held-out* dup-{max(ks)} canaries ({abl['num_test']} per seed, prefix {cfg.test_prefix}); "
        f"{cfg.random_directions} random unit directions per seed; perplexity on the never-trained control rows.",
        "",
        "| direction | a | exact match (24 chars) | exact match (first 8) | ROUGE-L P (chars) | validation ppl |",
        "|---|---|---|---|---|---|",
    ]
    for kind, rows in (("none", {"0": abl["none"]}), *((k, abl[k]) for k in ("probe", "meandiff", "random"))):
        for a, d in rows.items():
            lines.append(
                f"| {kind} | {a} | {_f(d['exact'], 3)} | {_f(d['exact8'], 3)} | {_f(d['rouge_p'], 3)} | "
                f"{_f(d['val_ppl'])} |"
            )
    lines += [
        "",
        "At matched perplexity (each direction's sweep interpolated to where its perplexity first reaches the ratio "
        "x the unablated one; random = the mean over the random directions that reach it), mean [95% t-interval over "
        "seeds]; probe - random < 0 means the probe direction removes more extraction at the same cost:",
        "",
        "| perplexity ratio | measure | probe | mean-difference | random | probe - random | reading |",
        "|---|---|---|---|---|---|---|",
    ]
    n = len(res["seeds"])
    for ratio, entry in abl["matched"].items():
        for m, e in entry.items():
            lines.append(
                f"| {ratio} | {m} | {_ci(e['probe'], seeds=n)} | {_ci(e['meandiff'], seeds=n)} | "
                f"{_ci(e['random'], seeds=n)} (directions reaching it per seed {e['random_reached']}) | "
                f"{_ci(e['probe_minus_random'], seeds=n)} | {matched_verdict(e['probe_minus_random'], m)} |"
            )
    lines += [
        "",
        "Per seed (probe, random mean), exact8: "
        + "; ".join(
            f"{ratio}: "
            + ", ".join(
                _pair(p, r) for p, r in zip(e["exact8"]["probe_per_seed"], e["exact8"]["random_per_seed"], strict=True)
            )
            for ratio, e in abl["matched"].items()
        )
        + ". NaN: the probe's sweep never reaches that perplexity.",
    ]
    return lines + ["", "![probes and ablation](probes_ablation.png)", ""]


def hotspot(cfg: AuditConfig, res: dict) -> list[str]:
    ks, tp, q = cfg.dup_counts, cfg.test_prefix, res["quadrants"]
    lines = [
        "## 5. GenDataCarto hotspot comparison",
        "",
        "Quadrants of the target run over its trained rows (m at the median final loss, percentile eps), rows per "
        "group:",
        "",
        "| rows | " + " | ".join(QUADRANTS) + " |",
        "|---|---|---|---|---|",
    ]
    for g, k in enumerate(ks):
        lines.append(f"| dup {k} | " + " | ".join(_f(d, 1) for d in q["groups"][g]) + " |")
    lines.append("| ordinary | " + " | ".join(_f(d, 1) for d in q["ordinary"]) + " |")
    for name, title in (
        ("hotspot", "Hotspot-Memorized rows"),
        ("high_m", "High-m rows (Hotspot-Memorized + Noisy-Outlier)"),
    ):
        h = res["hotspot"][name]
        lines += ["", f"**{title}** vs the other ordinary (non-duplicated) rows; rows per seed: {h['num_hotspot']}."]
        if not h["seeds_with_hotspots"]:
            continue
        lines += [
            "",
            f"| quantity (prefix {tp}) | {name} | other ordinary rows |",
            "|---|---|---|",
            f"| LCSubstring gap vs control (chars) | {_f(h['gap_hot_lcs_chars'])} | {_f(h['gap_other_lcs_chars'])} |",
            f"| ROUGE-L P (chars) gap vs control | {_f(h['gap_hot_rouge_p_chars'], 3)} | "
            f"{_f(h['gap_other_rouge_p_chars'], 3)} |",
            f"| smallest \\|S\\| with MW power >= 0.8 (per seed) | {h['min_size_hot']} | {h['min_size_random']} |",
            f"| mean probe score | {_f(h['probe_hot_mean'], 3)} | {_f(h['probe_other_mean'], 3)} |",
            "",
            f"{name} minus other: ROUGE-L P (chars) {_f(h['hot_minus_other_rouge_p_chars'], 3)} (interval above 0 in "
            f"{h['hot_minus_other_ci_excludes_0']}/{h['seeds_with_hotspots']} seeds), LCSubstring "
            f"{_f(h['hot_minus_other_lcs_chars'])}; probe-score AUROC for {name} vs other "
            f"{_f(h['probe_auroc_hot'], 3)} (one-sided MWU p {_f(h['probe_mwu_p'], 3)}).",
        ]
    return lines + [
        "",
        f"Spearman over ordinary rows: m vs ROUGE-L P (chars) {_f(res['m_rouge_spearman'], 3)}, m vs probe score "
        f"{_f(res['m_probe_spearman'], 3)}.",
    ]
