"""Runs one part over its seeds (resumable: a seed whose JSON exists is not redone), then its summary, figures and
report (``report``: summaries over seeds and report.md; ``plots``: the PNGs).

Workdir layout: ``<part>/seed_<s>.json`` (+ ``.npz`` arrays for the plots), ``results.json`` ({part: summary}, every
part run into this workdir), ``report.md`` (all parts present) and ``<part>_*.png``.
"""

import json
import os
import time

import jax
import numpy as np

from gdc import jsonio
from gdc.studies.classify import demem, fairness, mat, plots, report, robust
from gdc.studies.classify.config import PartConfig, part_of

RUNNERS = {"mat": mat.run_seed, "demem": demem.run_seed, "fairness": fairness.run_seed}
RUNNERS["demem_robust"] = robust.run_seed


def _arrays(res: dict) -> dict[str, np.ndarray]:
    flat = {}
    for key in ("_arrays", "_roc"):
        for name, v in res.get(key, {}).items():
            if isinstance(v, dict):
                flat.update({f"{name}__{k}": np.asarray(a) for k, a in v.items()})
            else:
                flat[name] = np.asarray(v)
    return flat


def run(cfg: PartConfig, workdir: str, command: str = "", keep_command: bool = False) -> dict:
    """Runs (or reloads) every seed of the part, then writes results.json, report.md and the PNGs.

    ``keep_command``: cite the command already recorded for this part (a re-render keeps the command that ran it).
    """
    part = part_of(cfg)
    os.makedirs(os.path.join(workdir, part), exist_ok=True)
    seeds, arrays = [], []
    for seed in cfg.seeds:
        path = os.path.join(workdir, part, f"seed_{seed}.json")
        if os.path.exists(path):
            print(f"[{part}] seed {seed}: kept {path}", flush=True)
            with open(path) as f:
                res = json.load(f)
        else:
            start = time.time()
            res = RUNNERS[part](cfg, seed)
            res["seconds"] = time.time() - start
            np.savez_compressed(path.replace(".json", ".npz"), **_arrays(res))
            res = jsonio.plain(res, drop_private=True)  # in memory as in the file: non-finite floats as strings
            jsonio.write(path, res)
            print(f"[{part}] seed {seed}: {res['seconds']:.0f} s", flush=True)
        seeds.append(res)
        npz = path.replace(".json", ".npz")
        arrays.append(dict(np.load(npz)) if os.path.exists(npz) else {})
    summary = {"summarize": report.SUMMARIES[part](seeds), "seeds": seeds}
    summary["plots"] = plots.PLOTS[part](seeds, arrays, workdir)
    summary["command"] = command
    summary["config"] = jsonio.plain(cfg.__dict__, drop_private=True)
    summary["environment"] = f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs"
    summary["seconds_total"] = float(sum(s.get("seconds", 0.0) for s in seeds))
    path = os.path.join(workdir, "results.json")
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    if keep_command and results.get(part, {}).get("command"):
        summary["command"] = results[part]["command"]
    results[part] = jsonio.plain(summary, drop_private=True)
    jsonio.write(path, results)
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report.render(results))
    return results[part]
