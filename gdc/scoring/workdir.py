"""Reads a run's tracker snapshots into a loss matrix and writes ``scores/scores.npz`` and ``scores/scores.json``.

``load_*`` read, ``compute_scores`` is pure (arrays in, arrays and a JSON-able summary out), ``write_scores``
writes; ``score_run`` chains the three. Checkpoint rows are in training order: epochs, and within an epoch the
scoring passes by position.

Integrity: the loss files must cover epochs 0..E-1 without a gap (``load_loss_matrix``); ``check_finished`` refuses a
run without ``summary.json`` or missing any epoch it trained; ``scores.json`` records the run's files it was computed
from (``inputs``), and ``stale_scores`` says when they changed since.
"""

import hashlib
import json
import os
import re
from typing import Any

import numpy as np

from gdc import jsonio
from gdc.errors import StageInputError
from gdc.scoring import cartography as carto
from gdc.scoring.spans import compute_span_scores

TRAINING_PASS = "training pass (pre-update, in-step)"
SCORING_PASS = "fixed-parameter scoring pass"
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.npz$")
_PASS_RE = re.compile(r"^epoch_(\d+)_pass_at_(\d+)\.npy$")
_SPAN_RE = re.compile(r"^span_epoch_(\d+)\.npz$")
_SPAN_PASS_RE = re.compile(r"^span_epoch_(\d+)_pass_at_(\d+)\.npy$")


def _tracker_config(workdir: str) -> dict[str, Any]:
    """The run's tracker section, with ``upsampled``: whether its training repeated ids within an epoch."""
    path = os.path.join(workdir, "config.json")
    try:
        config = jsonio.read(path)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path} is missing: score a workdir written by a training run.") from e
    tracker = config.get("tracker")
    if not isinstance(tracker, dict):
        raise ValueError(f"{path} has no 'tracker' section.")
    return {**tracker, "upsampled": bool((config.get("train") or {}).get("multiplicity_path"))}


def _listing(workdir: str, pattern: re.Pattern) -> list[tuple[tuple[int, ...], str]]:
    folder = os.path.join(workdir, "trackers")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    found = [(tuple(int(g) for g in m.groups()), name) for name in names if (m := pattern.match(name))]
    return [(key, os.path.join(folder, name)) for key, name in sorted(found)]


def _cached_matrix(workdir: str, source: str, paths: list[str], read) -> np.ndarray:
    """The stacked rows, memory-mapped from ``scores/loss_ExN_<source>.npy``; rebuilt when a row file is newer or the
    row count changed, so repeated scoring (eps sweeps, the study's stages) reads one file instead of E."""
    cache = os.path.join(workdir, "scores", f"loss_ExN_{source}.npy")
    try:
        fresh = os.path.getmtime(cache) >= max(os.path.getmtime(p) for p in paths)
        if fresh:
            loss_ExN = np.load(cache, mmap_mode="r")
            if loss_ExN.shape[0] == len(paths) and loss_ExN.dtype == np.float32:
                return loss_ExN
    except (OSError, ValueError):
        pass
    loss_ExN = np.stack([read(p) for p in paths]).astype(np.float32)
    try:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp.npy"
        np.save(tmp, loss_ExN)
        os.replace(tmp, cache)
        return np.load(cache, mmap_mode="r")
    except OSError:  # a read-only workdir: score from memory
        return loss_ExN


def load_loss_matrix(workdir: str, source: str = "epoch") -> tuple[np.ndarray, dict[str, Any]]:
    """Stacks a run's per-checkpoint losses into a ``[E, N]`` float32 matrix (NaN: not seen at that checkpoint).

    Args:
      workdir: the run's workdir.
      source: "epoch": one row per ``trackers/epoch_XXXX.npz`` (its ``loss_N``: the last loss the tracker read in
        that epoch); "passes": one row per ``trackers/epoch_XXXX_pass_at_PPPPP.npy``; "auto": "passes" when the run
        had scoring passes, else "epoch" (the rows the tracker itself read).

    Returns:
      (loss_ExN, meta): loss_ExN is read-only (memory-mapped from a cache under ``scores/``); meta holds source,
      loss_source (TRAINING_PASS or SCORING_PASS), checkpoints (E), epochs
      and positions of the rows, early_checkpoints (rows in the first ``tracker.early_epochs`` epochs), and the
      tracker's criterion, eps_low, eps_high, early_epochs, scoring_passes, what it read (tracker_reads) and
      whether the run up-sampled (``upsampled``: the tracker then read an id several times per epoch, the loss
      file once).
    """
    tracker = _tracker_config(workdir)
    k = int(tracker.get("scoring_passes", 0))
    tracker_reads = SCORING_PASS if k > 0 else TRAINING_PASS
    if source == "auto":
        source = "passes" if k > 0 else "epoch"
    if source == "epoch":
        files = _listing(workdir, _EPOCH_RE)
        read = lambda path: np.load(path)["loss_N"]  # noqa: E731
        loss_source = tracker_reads  # with scoring passes, loss_N is the epoch's last pass.
    elif source == "passes":
        files = _listing(workdir, _PASS_RE)
        read = np.load
        loss_source = SCORING_PASS
    else:
        raise ValueError(f"source={source!r}: use 'epoch', 'passes' or 'auto'.")
    if not files:
        raise FileNotFoundError(f"no {source} loss files under {os.path.join(workdir, 'trackers')}.")
    epochs = [key[0] for key, _ in files]
    gaps = sorted(set(range(max(epochs) + 1)) - set(epochs))
    if gaps:
        raise StageInputError(
            f"{os.path.join(workdir, 'trackers')} has {source} loss files for epochs {sorted(set(epochs))} but none "
            f"for epochs {gaps}: scoring would skip them silently. Restore the missing files, or retrain the run in a "
            "new workdir."
        )
    early_epochs = int(tracker.get("early_epochs", 1))
    meta = {
        "source": source,
        "loss_source": loss_source,
        "checkpoints": len(files),
        "epochs": epochs,
        "positions": [key[1] for key, _ in files] if source == "passes" else None,
        "early_checkpoints": int(sum(e < early_epochs for e in epochs)),
        "tracker_reads": tracker_reads,
        **{f: tracker.get(f) for f in ("criterion", "eps_low", "eps_high", "early_epochs", "scoring_passes")},
        "upsampled": tracker["upsampled"],
    }
    return _cached_matrix(workdir, source, [path for _, path in files], read), meta


def load_span_loss_matrix(workdir: str, source: str = "epoch") -> np.ndarray | None:
    """Stacks a run's span losses (``tracker.spans``) into an ``[E, N, Sp]`` float32 matrix (NaN: the span was not
    seen at that checkpoint); None for a run without spans. ``source`` "epoch": one row per
    ``trackers/span_epoch_XXXX.npz`` (``loss_NxSp``); "passes": one row per scoring pass
    (``trackers/span_epoch_XXXX_pass_at_PPPPP.npy``), the rows of ``load_loss_matrix(workdir, "passes")``."""
    if source not in ("epoch", "passes"):
        raise ValueError(f"source={source!r}: use 'epoch' or 'passes'.")
    pattern = _SPAN_RE if source == "epoch" else _SPAN_PASS_RE
    files = _listing(workdir, pattern)
    if not files:
        return None
    epochs = sorted({key[0] for key, _ in files})
    if epochs != list(range(len(epochs))):
        raise StageInputError(
            f"{os.path.join(workdir, 'trackers')} has span loss files for epochs {epochs}: a gap between epochs "
            "would be skipped silently. Restore the missing files, or retrain the run in a new workdir."
        )
    read = (lambda path: np.load(path)["loss_NxSp"]) if source == "epoch" else np.load
    return np.stack([read(path) for _, path in files]).astype(np.float32)


def load_tracker(workdir: str, epoch: int | None = None) -> dict[str, np.ndarray]:
    """The tracker snapshot ``trackers/epoch_XXXX.npz`` (the last epoch by default) as a dict of arrays."""
    files = dict(_listing(workdir, _EPOCH_RE))
    if not files:
        raise FileNotFoundError(f"no epoch snapshots under {os.path.join(workdir, 'trackers')}.")
    key = max(files) if epoch is None else (epoch,)
    if key not in files:
        raise FileNotFoundError(f"no snapshot for epoch {epoch} (have {sorted(k[0] for k in files)}).")
    with np.load(files[key]) as z:
        return {name: z[name] for name in z.files}


def _threshold_summary(eps: np.ndarray) -> float | dict[str, float]:
    if eps.ndim == 0:
        return float(eps)
    return {
        "per_example": True,
        "min": float(np.nanmin(eps)),
        "median": float(np.nanmedian(eps)),
        "max": float(np.nanmax(eps)),
    }


def compute_scores(
    loss_ExN: np.ndarray,
    meta: dict[str, Any],
    tracker: dict[str, np.ndarray] | None = None,
    *,
    eps: float | None = None,
    kind: str = "absolute",
    hysteresis: float | None = None,
    early: int | None = None,
    q_d: float = 50.0,
    q_m: float = 50.0,
    tie_break: str = "strict",
    never_learned: str = "sentinel",
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every per-example score of one run (pure).

    Args:
      loss_ExN, meta: from ``load_loss_matrix``.
      tracker: optional last-epoch snapshot (``load_tracker``); its own counts are copied next to the offline ones.
      eps: learn threshold of ``kind``; None: the run's tracker.eps_low / eps_high (absolute).
      kind: "absolute", "percentile" or "relative" (``cartography.resolve_eps``).
      hysteresis: forget threshold of the same kind (>= eps); None: single threshold.
      early: checkpoints in the difficulty window; None: meta["early_checkpoints"].
      q_d, q_m, tie_break: quadrant percentiles and tie rule (``cartography.quadrants``).
      never_learned: "sentinel" or "zero" (``cartography.memorization``).
      seed: tie-breaking seed.

    Returns:
      (arrays, summary): ``[N]`` arrays named with their shape; summary is JSON-able.
    """
    if eps is None:
        if hysteresis is not None:
            raise ValueError("hysteresis needs eps (both of the same kind).")
        kind, value = "absolute", (float(meta["eps_low"]), float(meta["eps_high"]))
    else:
        value = eps if hysteresis is None else (eps, hysteresis)
    eps_low, eps_high = carto.resolve_pair(loss_ExN, kind, value)
    early = int(early or meta.get("early_checkpoints") or 1)
    n = loss_ExN.shape[1]
    if loss_ExN.size >= carto.FAST_MIN_SIZE:  # one parallel compiled pass (gdc/scoring/fast.py), same numbers
        from gdc.scoring import fast

        ev = fast.scores(loss_ExN, early, eps_low, eps_high)
        d_N = ev["d_N"]
    else:
        ev = carto.forget_events(loss_ExN, eps_low, eps_high)
        d_N = carto.difficulty(loss_ExN, early)
    mem = carto.memorization(
        ev["forget_N"],
        ev["transitions"],
        ev["ever_learned_N"],
        observed_N=ev["observed_N"],
        never_learned=never_learned,
    )
    quadrant_N, qinfo = carto.quadrants(d_N, mem["m_N"], q_d, q_m, tie_break, state_N=mem["state_N"], seed=seed)
    uv_N, uv_norm_N = carto.upward_variation(loss_ExN)
    confidence_N, variability_N = carto.cartography_axes(carto.probability_from_loss(loss_ExN))
    arrays = {
        "d_N": d_N,
        "m_N": mem["m_N"],
        "m_rank_N": mem["m_rank_N"],
        "forget_N": ev["forget_N"],
        "learn_N": ev["learn_N"],
        "state_N": mem["state_N"],
        "observed_N": ev["observed_N"],
        "first_learned_N": ev["first_learned_N"],
        "uv_N": uv_N,
        "uv_norm_N": uv_norm_N,
        "quadrant_N": quadrant_N,
        "confidence_N": confidence_N,
        "variability_N": variability_N,
        "final_loss_N": carto.final_loss(loss_ExN),
        "eps_low_N": np.broadcast_to(eps_low, (n,)).astype(np.float64),
        "eps_high_N": np.broadcast_to(eps_high, (n,)).astype(np.float64),
    }
    agreement = None
    if tracker is not None:
        arrays["tracker_forget_N"] = tracker["forget_N"]
        arrays["tracker_learn_N"] = tracker["learn_N"]
        arrays["tracker_learned_N"] = tracker["learned_N"]
        count_N = tracker["count_early_N"]
        arrays["d_tracker_N"] = np.divide(
            tracker["loss_sum_early_N"], count_N, out=np.full(n, np.nan), where=count_N > 0
        )
        # Offline counts reproduce the tracker's only for its own rule on the rows it read, one read per row (an
        # up-sampled run's tracker reads a row once per copy, its loss file keeps one loss per epoch).
        comparable = (
            meta.get("criterion") == "loss"
            and not meta.get("upsampled")
            and eps is None
            and meta.get("loss_source") == meta.get("tracker_reads")
            and (meta["source"] == "passes" or not meta.get("scoring_passes"))
        )
        agreement = {
            "comparable": bool(comparable),
            "forget": float(np.mean(tracker["forget_N"] == ev["forget_N"])),
            "learn": float(np.mean(tracker["learn_N"] == ev["learn_N"])),
        }
    summary = {
        "loss": meta,
        "thresholds": {
            "kind": kind,
            "value": value,
            "eps_low": _threshold_summary(eps_low),
            "eps_high": _threshold_summary(eps_high),
        },
        "early_checkpoints": early,
        "m_denominator": f"E - 1 = {ev['transitions']} checkpoint transitions",
        "never_learned": never_learned,
        "quadrants": qinfo,
        "states": {name: int((mem["state_N"] == s).sum()) for s, name in enumerate(carto.STATE_NAMES)},
        "frac_m_pos": float(np.mean(mem["m_N"] > 0)),
        "tracker_agreement": agreement,
    }
    return arrays, summary


def input_files(workdir: str) -> dict[str, Any]:
    """What scores are computed from: the run's loss files and summary.json, as a digest of (name, size, mtime)."""
    files = _listing(workdir, _EPOCH_RE) + _listing(workdir, _PASS_RE) + _listing(workdir, _SPAN_RE)
    files += _listing(workdir, _SPAN_PASS_RE)
    names = [os.path.join("trackers", os.path.basename(path)) for _, path in files]  # relative: a copy matches
    names += ["summary.json"] if os.path.exists(os.path.join(workdir, "summary.json")) else []
    stats = [(n, os.stat(os.path.join(workdir, n))) for n in sorted(names)]
    listing = [[n, st.st_size, st.st_mtime_ns] for n, st in stats]
    return {"files": len(listing), "digest": hashlib.sha256(json.dumps(listing).encode()).hexdigest()[:16]}


def stale_scores(workdir: str) -> str | None:
    """Why ``scores/scores.json`` no longer matches the run's files (None: it does, or it predates the record)."""
    path = os.path.join(workdir, "scores", "scores.json")
    recorded = jsonio.read(path).get("inputs")
    now = input_files(workdir)
    if recorded is None or recorded == now:
        return None
    return f"the run's tracker files or summary.json changed after {path} was written ({recorded} -> {now})"


def check_finished(workdir: str, stage: str = "train") -> None:
    """Refuses (StageInputError) a run that has not finished training, or whose epoch snapshots have a gap or stop
    short of the epochs it trained, naming what is missing and ``stage`` (the mode that trains it)."""
    summary = os.path.join(workdir, "summary.json")
    if not os.path.exists(summary):
        raise StageInputError(
            f"{workdir} has not finished training (no summary.json): run --mode={stage} first (it resumes from the "
            "latest checkpoint), then score."
        )
    meta = jsonio.read(os.path.join(workdir, "dataset.json"))
    trained = meta["total_steps"] // meta["steps_per_epoch"]
    epochs = [key[0] for key, _ in _listing(workdir, _EPOCH_RE)]
    missing = sorted(set(range(trained)) - set(epochs))
    if missing:
        raise StageInputError(
            f"{os.path.join(workdir, 'trackers')} lacks epoch_XXXX.npz for epochs {missing} of the {trained} the run "
            "trained: restore them, or retrain the run in a new workdir."
        )


def write_scores(workdir: str, arrays: dict[str, np.ndarray], summary: dict[str, Any]) -> tuple[str, str]:
    """Writes ``scores/scores.npz`` and ``scores/scores.json`` (with ``inputs``: ``input_files``); returns their
    paths."""
    folder = os.path.join(workdir, "scores")
    os.makedirs(folder, exist_ok=True)
    npz, js = os.path.join(folder, "scores.npz"), os.path.join(folder, "scores.json")
    np.savez(npz, **arrays)
    jsonio.write(js, {**summary, "inputs": input_files(workdir)}, indent=2)
    return npz, js


def score_run(workdir: str, *, source: str = "auto", **kw: Any) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Loads a run's losses and last tracker snapshot, computes every score and writes ``WORKDIR/scores/``.

    Args:
      workdir: the run's workdir.
      source: which rows (``load_loss_matrix``).
      **kw: ``compute_scores`` keywords (eps, kind, hysteresis, early, q_d, q_m, tie_break, never_learned, seed).

    With span files (``tracker.spans``) the arrays also hold ``compute_span_scores``'s and the summary ``spans``.

    Returns:
      (arrays, summary) as written.
    """
    loss_ExN, meta = load_loss_matrix(workdir, source)
    arrays, summary = compute_scores(loss_ExN, meta, load_tracker(workdir), **kw)
    loss_ExNxSp = load_span_loss_matrix(workdir, meta["source"])  # the rows of loss_ExN
    if loss_ExNxSp is not None:
        # Spans chosen during training (top_k_drop) are first seen after a warm-up: scored from their first
        # observed checkpoint, so d is the mean over the early checkpoints they have.
        seen_E = np.isfinite(loss_ExNxSp).reshape(len(loss_ExNxSp), -1).any(axis=1)
        loss_ExNxSp = (
            loss_ExNxSp[int(np.argmax(seen_E)) :] if seen_E.any() else loss_ExNxSp
        )  # tracker.spans: the same scores per span, and their max and mean per example
        span_kw = {k: kw[k] for k in ("eps", "kind", "hysteresis", "early") if k in kw}
        span_arrays, summary["spans"] = compute_span_scores(loss_ExNxSp, meta, **span_kw)
        arrays.update(span_arrays)
    write_scores(workdir, arrays, summary)
    return arrays, summary
