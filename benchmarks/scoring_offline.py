"""Offline scoring of N examples x E checkpoints: d, m, quadrants and an eps sweep of S values, from a memory-mapped
loss matrix, side by side with the numpy loop it replaces.

  python benchmarks/scoring_offline.py                    # N = 1e6, E = 50, S = 20; writes scoring_offline.json

The loss matrix is synthetic (decaying gamma-distributed losses, 1% NaN) and saved once as a float32 .npy under
--tmp, then opened with ``mmap_mode="r"`` as ``gdc.scoring.load_loss_matrix`` does with its cache. Each stage is timed
--reps times (median of wall-clock and of this process's CPU time; on a shared machine the CPU time is the fairer
number). The first call of each compiled kernel (numba, cached on disk after the first run) is reported apart.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from gdc.scoring import cartography as carto  # noqa: E402
from gdc.scoring import fast  # noqa: E402
from gdc.scoring.sweep import eps_sweep  # noqa: E402


def timed(fn, reps):
    walls, cpus, out = [], [], None
    for _ in range(reps):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return out, {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--sweep", type=int, default=20)
    p.add_argument("--early", type=int, default=5)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--tmp", default="/tmp/gdc_bench_scoring")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "scoring_offline.json"))
    args = p.parse_args()

    os.makedirs(args.tmp, exist_ok=True)
    path = os.path.join(args.tmp, f"loss_ExN_{args.epochs}x{args.n}.npy")
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        loss = rng.gamma(2.0, 0.5, (args.epochs, args.n)).astype(np.float32)
        loss *= np.linspace(1.5, 0.3, args.epochs, dtype=np.float32)[:, None]
        loss[rng.random(loss.shape) < 0.01] = np.nan
        np.save(path, loss)
        del loss
    (loss_ExN, t_open) = timed(lambda: np.load(path, mmap_mode="r"), 1)
    eps_S = np.linspace(0.2, 2.0, args.sweep)
    eps_low, eps_high = 0.8, 1.0  # hysteresis for the main m

    # First calls: numba compiles (or loads its on-disk cache); also pages the matrix in.
    w = time.perf_counter()
    fast.sweep(loss_ExN[:, :4096], eps_S)
    first_call = time.perf_counter() - w

    def score():
        # One parallel pass gives d, the main (hysteresis) machine and the sweep's counts; m and the quadrants from
        # them in numpy. The sweep's m is kept as its forget counts (m = forget / (E - 1), the same ranking).
        out = fast.scores(loss_ExN, args.early, eps_low, eps_high, eps_S)
        mem = carto.memorization(
            out["forget_N"], out["transitions"], out["ever_learned_N"], observed_N=out["observed_N"]
        )
        quadrant_N, _ = carto.quadrants(out["d_N"], mem["m_N"], state_N=mem["state_N"])
        return out["d_N"], mem, quadrant_N, out["forget_SxN"], (out["forget_SxN"] > 0).mean(axis=1)

    stages = {
        "numpy: d (difficulty)": lambda: carto.difficulty(loss_ExN, args.early),
        "numpy: m (state machine loop)": lambda: carto.forget_events(loss_ExN, eps_low, eps_high),
        f"fused pass: d, m and {args.sweep}-threshold sweep": lambda: fast.scores(
            loss_ExN, args.early, eps_low, eps_high, eps_S
        ),
        "fused pass: d and m only": lambda: fast.scores(loss_ExN, args.early, eps_low, eps_high),
    }
    results = {"open_mmap_s": t_open["wall_s"], "first_call_compile_or_cache_s": first_call, "stages": {}}
    for name, fn in stages.items():
        results["stages"][name] = timed(fn, args.reps)[1]
    d_N = carto.difficulty(loss_ExN, args.early)
    ev = carto.forget_events(loss_ExN, eps_low, eps_high)
    m_N = carto.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"])["m_N"]
    results["stages"]["quadrants"] = timed(lambda: carto.quadrants(d_N, m_N), args.reps)[1]
    out, results["total (d, m, quadrants, sweep)"] = timed(score, args.reps)

    # The numpy loop the sweep replaces ran once per threshold: one single-threshold run of it, times S.
    _, loop_one = timed(lambda: carto.forget_events(loss_ExN, 1.0), 3)
    results["numpy loop, one threshold"] = loop_one
    results["numpy loop, sweep estimate (x S)"] = {k: v * args.sweep for k, v in loop_one.items()}
    # The study's full eps_sweep also ranks every threshold's m (top-k sets, Spearman): sorting-bound, timed apart.
    _, results["eps_sweep() with rank statistics"] = timed(lambda: eps_sweep(loss_ExN, list(eps_S)), 1)
    results["config"] = {**vars(args), "eps_low": eps_low, "eps_high": eps_high, "eps_sweep": eps_S.tolist()}
    results["frac_m_pos_S"] = out[4].tolist()
    total = results["total (d, m, quadrants, sweep)"]
    print(f"N = {args.n:.0e}, E = {args.epochs}, S = {args.sweep}; median of {args.reps}")
    for name, t in results["stages"].items():
        print(f"  {name:<52} wall {t['wall_s']:7.3f} s   cpu {t['cpu_s']:7.3f} s")
    print(f"  {'total (d, m, quadrants, sweep)':<52} wall {total['wall_s']:7.3f} s   cpu {total['cpu_s']:7.3f} s")
    print(f"  numpy loop, one threshold: cpu {loop_one['cpu_s']:.3f} s (x{args.sweep} for the sweep)")
    loop_total = {
        k: results["stages"]["numpy: d (difficulty)"][k]
        + results["stages"]["numpy: m (state machine loop)"][k]
        + loop_one[k] * args.sweep
        for k in ("wall_s", "cpu_s")
    }
    results["numpy loops, d + m + sweep (x S)"] = loop_total
    results["speed-up of the total vs the numpy loops (wall)"] = loop_total["wall_s"] / total["wall_s"]
    print(
        f"  numpy loops for d + m + sweep: wall {loop_total['wall_s']:.3f} s; total is "
        f"{results['speed-up of the total vs the numpy loops (wall)']:.1f}x faster (wall)"
    )
    print(f"  eps_sweep() with rank statistics: cpu {results['eps_sweep() with rank statistics']['cpu_s']:.2f} s")
    print(f"  first call (numba compile or cache load): {first_call:.2f} s")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
