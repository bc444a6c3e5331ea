"""Numerical checks of the paper's theory (paper.md §5, §11 items 7-10), one module per claim.

``lower_bound``: m lower-bounds influence (convex). ``stability``: down-weighting hotspots and stability / gap
(convex). ``nonconvex``: the same measurements on the MLP and the char LSTM. Each ``run(cfg, seed, out_dir)`` returns
a JSON-able result with a ``verdict`` and draws its PNGs; ``run`` below collects them into ``verify.json`` and
``verify.md`` (``launch.py --mode=verify``). Results of claims not run this time are kept from an existing
``verify.json``, so ``configs/theory_convex.py`` and ``configs/theory_nonconvex.py`` can fill one report.
"""

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import jax

from gdc import jsonio
from gdc.theory import config as theory_config
from gdc.theory import report


def _modules():
    from gdc.theory import lower_bound, nonconvex, stability

    return {"lower_bound": lower_bound, "stability": stability, "nonconvex": nonconvex}


MODES = ("verify",)


def run(config: Mapping[str, Any], workdir: str, mode: str = "verify", command: str = "") -> dict:
    """Runs the claims of a theory config; writes verify.json, verify.md and the PNGs into ``workdir``.

    Args:
      config: ConfigDict (or dict) with ``seed`` and ``theory`` (see ``gdc.theory.config``).
      workdir: output folder (created).
      mode: the launch.py mode; only "verify".
      command: the command line, cited in verify.md.

    Returns:
      claim name -> result (every claim in verify.json, not only those run now).
    """
    del mode  # launch.py has checked it against MODES
    seed, cfg = theory_config.from_mapping(config)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "verify.json")
    results = {}
    if os.path.exists(path):
        results = jsonio.read(path)
    env = f"jax {jax.__version__}, {jax.device_count()} {jax.devices()[0].platform} device(s), {os.cpu_count()} CPUs"
    modules = _modules()
    for name in cfg.claims:
        start = time.time()
        print(f"[verify] {name} ...", flush=True)
        res = modules[name].run(cfg, seed, workdir)
        res.update(
            seconds=time.time() - start,
            config=dataclasses.asdict(cfg),
            seed=seed,
            command=command,
            environment=env,
        )
        results[name] = jsonio.roundtrip(res)
        print(f"[verify] {name}: {res['verdict']} ({res['seconds']:.0f} s)", flush=True)
        jsonio.write(path, results)
    ordered = {k: results[k] for k in theory_config.CLAIMS if k in results}
    with open(os.path.join(workdir, "verify.md"), "w") as f:
        f.write(report.render(ordered))
    return ordered
