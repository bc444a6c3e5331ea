"""The GenDataCarto study: probe -> score -> intervene -> retrain -> evaluate -> report, for every seed.

Layout under ``workdir``::

  seed_S/probe/                 the probe run (full data, seed S); it is also the baseline arm
  seed_S/reference/             canary datasets: the same run without any canary copy (calibrated MIA reference)
  seed_S/probe/scores/          scores.npz / scores.json (gdc.scoring), sweep.json (eps sweep, detector table)
  seed_S/arms/index.json        the arms: name, artefact paths, train overrides
  seed_S/arms/<arm>/            artefact (keep_idx.npy | weights_N.npy | multiplicity_N.npy, artefact.json), run/
  seed_S/evals/<arm>.json|.npz  evaluator results (scalars | arrays)
  seed_S/eval_inputs/<arm>.json the runs each evaluation read (summary.json size and time): redone when they change
  results.json, report.md, *.png

Every stage skips work whose output exists, and training resumes from checkpoints, so rerunning a stage (or
``--mode=all``) after an interruption redoes nothing finished. A stage refuses missing, unfinished or incomplete
inputs (StageInputError naming them and the mode to run first): scoring needs a finished probe whose epoch snapshots
have no gap, and scores whose probe files changed since are recomputed, as are evaluations whose runs were retrained
since (``eval_inputs/``). The data split (``data.split_seed``) is the same for every seed; the seed changes
initialisation, data order and tie breaking.
"""

import dataclasses
import os
from collections.abc import Callable

import jax
import numpy as np

from gdc import config as parse
from gdc import interventions as iv
from gdc import jsonio, lock, scoring, sharding
from gdc.errors import ConfigError, StageInputError
from gdc.scoring.workdir import check_finished, stale_scores
from gdc.studies.carto.arms import build_arms
from gdc.studies.carto.config import CartoConfig
from gdc.train import fingerprint, loop

STAGES = ("train", "score", "intervene", "retrain", "evaluate", "report")


def _log(msg: str) -> None:
    if jax.process_index() == 0:
        print(f"[study] {msg}", flush=True)


def seed_dir(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"seed_{seed}")


def _done(path: str) -> bool:
    return os.path.exists(path)


def _require(path: str, mode: str, what: str) -> None:
    """Refuses a stage whose input ``path`` (``what``) is missing, naming the mode that writes it."""
    if not os.path.exists(path):
        raise StageInputError(f"{path} is missing ({what}): run --mode={mode} first, or --mode=all.")


def _with(cfg: CartoConfig, seed: int, **train: object) -> CartoConfig:
    return dataclasses.replace(cfg, seed=seed, train=dataclasses.replace(cfg.train, **train))


def _train(cfg: CartoConfig, run_dir: str, label: str, epoch_metrics: Callable | None = None) -> None:
    if _done(os.path.join(run_dir, "summary.json")):
        return
    _log(f"training {label} -> {run_dir}")
    loop.train(cfg, run_dir, epoch_metrics=epoch_metrics)


def canary_extraction_metrics(graphdef, params, dataset, mesh) -> dict[str, float]:
    """Greedy extraction of the inserted canaries after an epoch: when memorization appears in the baseline."""
    from gdc import evaluation

    ctx = evaluation.EvalContext(graphdef=graphdef, params=params, mesh=mesh, dataset=dataset)
    out = evaluation.EVALUATORS["extraction"](ctx)
    return {
        "canary_extracted": out["inserted_extracted_count"],
        "canary_copy_extraction": out["inserted_copy_extraction_rate"],
        "canary_first_secret_prob": out["inserted_first_secret_prob"],
        "control_extracted": out["controls_extracted_count"],
    }


def _has_canaries(cfg: CartoConfig) -> bool:
    return cfg.data.source == "pydoc_canaries"


# ---------------------------------------------------------------------------------------------------------------
# Stages.
# ---------------------------------------------------------------------------------------------------------------
def stage_train(cfg: CartoConfig, workdir: str) -> None:
    """Probe runs (and, for canary data, the canary-free reference runs)."""
    for seed in cfg.study.seeds:
        hook = canary_extraction_metrics if _has_canaries(cfg) and "extraction" in cfg.study.evaluators else None
        _train(_with(cfg, seed), os.path.join(seed_dir(workdir, seed), "probe"), f"probe seed {seed}", hook)
        if _has_canaries(cfg) and "mia" in cfg.study.evaluators and cfg.study.reference:
            ref_dir = os.path.join(seed_dir(workdir, seed), "reference")
            if not _done(os.path.join(ref_dir, "summary.json")):
                from gdc.data import sources

                is_canary = sources.build_dataset(cfg.data).train["is_canary"]
                art = iv.remove(np.flatnonzero(is_canary), len(is_canary), "reference", purpose="calibrated MIA")
                paths = iv.write(art, os.path.join(ref_dir, "artefact"))
                _train(_with(cfg, seed, **paths), ref_dir, f"reference seed {seed}")


def _sweep_values(loss_ExN: np.ndarray, values: tuple) -> np.ndarray:
    if values:
        return np.asarray(values, np.float64)
    final = loss_ExN[-1][np.isfinite(loss_ExN[-1])]
    return np.quantile(final, np.linspace(0.05, 0.95, 10))


def stage_score(cfg: CartoConfig, workdir: str) -> None:
    s = cfg.study
    for seed in s.seeds:
        probe = os.path.join(seed_dir(workdir, seed), "probe")
        check_finished(probe)  # never score an unfinished probe, or one whose epoch snapshots have a gap
        if _done(os.path.join(probe, "scores", "sweep.json")):
            why = stale_scores(probe)
            if why is None:
                continue
            _log(f"rescoring seed {seed}: {why}")
        _log(f"scoring seed {seed}")
        kw = dict(kind=s.eps_kind, q_d=s.q_d, q_m=s.q_m, seed=seed)
        if s.eps >= 0:
            kw.update(eps=s.eps, hysteresis=s.hysteresis if s.hysteresis >= 0 else None)
        loss_ExN, meta = scoring.load_loss_matrix(probe, "auto")  # read once: scores and the eps sweep share it
        arrays, summary = scoring.compute_scores(loss_ExN, meta, scoring.load_tracker(probe), **kw)
        sweep = scoring.eps_sweep(loss_ExN, _sweep_values(loss_ExN, s.eps_sweep), "absolute")
        arrays["m_sweep_N"] = np.nan_to_num(sweep["m_SxN"]).mean(axis=0)  # eps-free variant: m averaged over the sweep
        scoring.write_scores(probe, arrays, summary)
        np.savez(os.path.join(probe, "scores", "sweep.npz"), **sweep)
        extra = {"eps_sweep": {k: v for k, v in sweep.items() if not k.endswith("N")}}
        dataset_meta = jsonio.read(os.path.join(probe, "dataset.json"))
        if dataset_meta.get("canaries"):
            is_canary = np.zeros(len(arrays["m_N"]), bool)
            for c in dataset_meta["canaries"]["inserted"]:
                is_canary[c["ids"]] = True
            named = {
                "m": arrays["m_rank_N"],
                "m_sweep": arrays["m_sweep_N"],
                "upward_variation": arrays["uv_N"],
                "d": arrays["d_N"],
                "low_final_loss": -arrays["final_loss_N"],
            }
            extra["detectors"] = scoring.detector_table(named, is_canary, s.prune_fractions)
        jsonio.write(os.path.join(probe, "scores", "sweep.json"), extra, indent=2)


def _same_artefact(folder: str, art: iv.Artefact) -> bool:
    """Whether ``folder`` already holds exactly this artefact's arrays (so its retrain can be reused)."""
    for field in ("keep_idx", "weights_N", "multiplicity_N"):
        arr, path = getattr(art, field), os.path.join(folder, f"{field}.npy")
        if (arr is None) != (not os.path.exists(path)) or (arr is not None and not np.array_equal(np.load(path), arr)):
            return False
    return True


def stage_intervene(cfg: CartoConfig, workdir: str) -> None:
    """Writes every arm of ``cfg.study`` (cheap and deterministic, so always rebuilt: a study extended with more
    arms or controls reuses the finished ones). An arm whose artefact on disk differs (the scores changed under a
    finished retrain) fails rather than mixing two designs in one report."""
    for seed in cfg.study.seeds:
        arms_dir = os.path.join(seed_dir(workdir, seed), "arms")
        scores_path = os.path.join(seed_dir(workdir, seed), "probe", "scores", "scores.npz")
        _require(scores_path, "score", f"seed {seed}'s probe scores")
        os.makedirs(arms_dir, exist_ok=True)  # a study without arms (study.methods=()) writes an empty index
        scores = dict(np.load(scores_path))
        index = []
        for art, overrides in build_arms(scores, cfg.study, seed):
            folder = os.path.join(arms_dir, art.name)
            if os.path.exists(os.path.join(folder, "artefact.json")) and not _same_artefact(folder, art):
                if os.path.exists(os.path.join(folder, "run")):
                    raise ConfigError(
                        f"{folder} holds a retrain of a different {art.name!r} (the scores or the study "
                        "changed); use a new --workdir or delete that arm's folder."
                    )
            paths = iv.write(art, folder)
            index.append(
                {
                    "name": art.name,
                    "paths": paths,
                    "token_matched": overrides.get("token_matched", False),
                    "affected": int(len(art.affected_ids)),
                }
            )
        _log(f"seed {seed}: {len(index)} arms")
        jsonio.write(os.path.join(arms_dir, "index.json"), index, indent=2)


def _arms(workdir: str, seed: int, methods: tuple) -> list[dict]:
    """The arms of a seed (``arms/index.json``); none when the study has no methods and intervene has not run."""
    path = os.path.join(seed_dir(workdir, seed), "arms", "index.json")
    if not os.path.exists(path):
        if not methods:
            return []
        raise StageInputError(
            f"{path} is missing: run --mode=intervene (after train and score) before retrain or evaluate, or "
            "--mode=all; with --config.study.methods='()' only the baseline is evaluated."
        )
    return jsonio.read(path)


def _probe_steps(workdir: str, seed: int) -> int:
    path = os.path.join(seed_dir(workdir, seed), "probe", "summary.json")
    _require(path, "train", f"seed {seed}'s finished probe, whose steps token-matched arms train")
    return jsonio.read(path)["step"]


def _arm_config(cfg, workdir, seed, arm) -> CartoConfig:
    total = _probe_steps(workdir, seed) if arm["token_matched"] else 0
    return _with(cfg, seed, total_steps=total, **arm["paths"])


def stage_retrain(cfg: CartoConfig, workdir: str) -> None:
    for seed in cfg.study.seeds:
        for arm in _arms(workdir, seed, cfg.study.methods):
            run_dir = os.path.join(seed_dir(workdir, seed), "arms", arm["name"], "run")
            _train(_arm_config(cfg, workdir, seed, arm), run_dir, f"{arm['name']} seed {seed}")


def stage_evaluate(cfg: CartoConfig, workdir: str) -> None:
    from gdc import evaluation
    from gdc.evaluation import canaries as canary_eval

    mesh = sharding.make_mesh()
    batch = cfg.train.batch_size
    for seed in cfg.study.seeds:
        sd = seed_dir(workdir, seed)
        _require(os.path.join(sd, "probe", "summary.json"), "train", f"seed {seed}'s finished probe (the baseline)")
        os.makedirs(os.path.join(sd, "evals"), exist_ok=True)
        reference = None
        if _has_canaries(cfg) and "mia" in cfg.study.evaluators and cfg.study.reference:
            ref_dir = os.path.join(sd, "reference")
            _require(os.path.join(ref_dir, "summary.json"), "train", f"seed {seed}'s finished reference run")
            _, reference, _, _ = loop.restore_params(_with(cfg, seed), ref_dir, mesh)
        runs = [({"name": "baseline", "paths": {}, "token_matched": False}, os.path.join(sd, "probe"))]
        runs += [(arm, os.path.join(sd, "arms", arm["name"], "run")) for arm in _arms(workdir, seed, cfg.study.methods)]
        for arm, run_dir in runs:
            out = os.path.join(sd, "evals", f"{arm['name']}.json")
            read = [run_dir] + ([ref_dir] if reference is not None else [])
            record = os.path.join(sd, "eval_inputs", f"{arm['name']}.json")  # beside evals/, where a .json is an arm
            if _done(out) and not _stale_eval(record, read):
                continue
            mode = "train" if arm["name"] == "baseline" else "retrain"
            _require(os.path.join(run_dir, "summary.json"), mode, f"the finished run of {arm['name']}, seed {seed}")
            _log(f"{'re-evaluating' if _done(out) else 'evaluating'} {arm['name']} seed {seed}")
            graphdef, params, dataset, step = loop.restore_params(_with(cfg, seed), run_dir, mesh)
            ctx = evaluation.EvalContext(
                graphdef=graphdef,
                params=params,
                mesh=mesh,
                dataset=dataset,
                batch_size=batch,
                reference_params=reference,
                seed=seed,
            )
            result = evaluation.evaluate(ctx, cfg.study.evaluators)
            scalars = {k: float(v) for k, v in result.items() if np.ndim(v) == 0}
            scalars["step"] = step
            if dataset.meta.get("canaries"):
                scalars["inserted_num_canaries"] = len(dataset.meta["canaries"]["inserted"])
            keep = arm["paths"].get("keep_idx_path")
            if keep and dataset.meta.get("canaries"):
                pruned = np.setdiff1d(np.arange(dataset.num_train), np.load(keep))
                scalars.update(canary_eval.prune_canary_fraction(pruned, dataset))
            np.savez(out.replace(".json", ".npz"), **{k: np.asarray(v) for k, v in result.items() if np.ndim(v)})
            jsonio.write(out, scalars, indent=2)
            os.makedirs(os.path.dirname(record), exist_ok=True)
            jsonio.write(record, {"runs": _run_stamps(read)}, indent=None)


def _run_stamps(run_dirs: list[str]) -> list[list[int]]:
    """(size, modification time) of each run's summary.json: what an evaluation read, as of now."""
    return [[(st := os.stat(os.path.join(d, "summary.json"))).st_size, st.st_mtime_ns] for d in run_dirs]


def _stale_eval(record: str, run_dirs: list[str]) -> bool:
    """Whether the runs an evaluation read were retrained since (False without a record, or without the runs)."""
    if not os.path.exists(record) or not all(os.path.exists(os.path.join(d, "summary.json")) for d in run_dirs):
        return False
    return jsonio.read(record)["runs"] != _run_stamps(run_dirs)


def stage_report(cfg: CartoConfig, workdir: str) -> None:
    from gdc.studies.carto import report

    for seed in cfg.study.seeds:  # what the report reads, each named with the mode that writes it
        sd = seed_dir(workdir, seed)
        _require(os.path.join(sd, "probe", "summary.json"), "train", f"seed {seed}'s finished probe")
        for name in ("scores.npz", "scores.json", "sweep.json"):
            _require(os.path.join(sd, "probe", "scores", name), "score", f"seed {seed}'s probe scores")
        arms = ["baseline"] + [a["name"] for a in _arms(workdir, seed, cfg.study.methods)]
        for arm in arms:
            _require(os.path.join(sd, "evals", f"{arm}.json"), "evaluate", f"the evaluation of {arm}, seed {seed}")
    report.write_report(cfg, workdir)


STAGE_FNS: dict[str, Callable[[CartoConfig, str], None]] = {
    "train": stage_train,
    "score": stage_score,
    "intervene": stage_intervene,
    "retrain": stage_retrain,
    "evaluate": stage_evaluate,
    "report": stage_report,
}


def run(cfg: CartoConfig, workdir: str, mode: str = "all") -> None:
    """Runs one stage (``mode`` in STAGES) or all of them in order."""
    parse.check_workdir(workdir)
    # Every retrain compiles the same step; a persistent cache makes the second and later compiles cheap.
    if not jax.config.jax_compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", os.path.join(os.path.abspath(workdir), ".jax_cache"))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    with lock.hold(workdir, enabled=jax.process_index() == 0):  # one study per workdir (gdc.lock)
        fingerprint.check(cfg, workdir, study=True)  # a finished study is not relabelled with another config
        for stage in STAGES if mode == "all" else (mode,):
            _log(f"stage {stage}")
            STAGE_FNS[stage](cfg, workdir)
