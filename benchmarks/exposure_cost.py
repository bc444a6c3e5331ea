"""Exact exposure and greedy decoding of canaries: the step API (KV cache for the transformer) vs full forward passes.

  python benchmarks/exposure_cost.py              # LSTM, GRU, transformer; writes exposure_cost.json (~3 min)

Models are freshly initialised (costs do not depend on the weights): width 128, LSTM/GRU depth 1, transformer
depth 2 with 4 heads and seq_len 64, on every local device (``gdc.sharding.make_mesh``). Canary prefixes have the
real format ("the secret code of abcde is ", 28 bytes) and 6-digit secrets.

  * Exposure, per canary: ``exposure.all_secret_log_likelihoods`` over all 10^6 secrets. "incremental" (one
    prefill + one ``branch_step`` per tree node, ~1.1e5 steps) is timed on whole canaries. "forward" (10^5
    passes of prefix + 5 digits) is timed on ``--forward_rows`` level-5 nodes (one batch of
    ``node_log_likelihoods``) and **extrapolated** to the 10^5 nodes of a canary, since a full run takes minutes.
  * Greedy decoding of ``--canaries`` prefixes, 7 bytes each (secret + "."), both methods of
    ``extraction.greedy_decode``, timed end to end (host to host).

Compile time is the AOT ``lower(...).compile()`` of each jitted function, reported apart; steady-state times are
the median of ``--reps`` calls after a warm-up call. Also the compiled tree's temporary memory (XLA's estimate).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from gdc import models, sharding  # noqa: E402
from gdc.evaluation import canaries, exposure, extraction  # noqa: E402
from gdc.evaluation.common import place_params  # noqa: E402

PREFIX = "the secret code of {} is "


def timed(fn, reps):
    fn()  # warm-up: compiles, fills caches
    times = []
    for _ in range(reps):
        w = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - w)
    return statistics.median(times)


def compile_time(jitted, *args):
    w = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    seconds = time.perf_counter() - w
    mem = compiled.memory_analysis()
    return seconds, (int(mem.temp_size_in_bytes) if mem is not None else None)


def bench_model(name: str, args, mesh) -> dict:
    depth = args.transformer_depth if name == "transformer" else args.depth
    cfg = models.ModelConfig(name=name, width=args.width, depth=depth, num_heads=args.heads)
    g, p = models.build(cfg, seed=0, seq_len=args.seq_len)
    d = args.digits
    keys = ["abcde", "qwert", "zxcvb", "mnbvc", "lkjhg", "poiuy", "asdfg", "hjklm", "rtyui", "fghjk"]
    prefixes = [PREFIX.format(keys[i % len(keys)]) for i in range(args.canaries)]
    out = {"depth": depth}
    placed = place_params(p, mesh)
    repl = sharding.replicated(mesh)

    # Exposure, incremental: whole canaries.
    buf_CxT, len_C = canaries.prefix_buffer(prefixes[:1], 0)
    tree = exposure._tree_fn(g, d, mesh, None)  # no ablation
    with jax.set_mesh(mesh):
        out["exposure_incremental_compile_s"], out["exposure_incremental_temp_bytes"] = compile_time(
            tree, placed, jax.device_put(buf_CxT[0], repl), jax.device_put(len_C[0], repl), None
        )
    per = timed(lambda: exposure.all_secret_log_likelihoods(g, p, prefixes[:1], d, mesh), args.reps)
    out["exposure_incremental_per_canary_s"] = per

    # Exposure, forward: one batch of level-(d-1) nodes, extrapolated.
    rows = args.forward_rows
    m = 10 ** (d - 1)
    node_R = np.random.default_rng(0).choice(m, rows, replace=False)
    canary_R = np.zeros(rows, np.int64)
    node_fn = exposure._node_fn(g, d, mesh, None)
    fbuf, flen = canaries.prefix_buffer(prefixes[:1], d)
    b = extraction.pad_rows(rows, mesh)
    spec = sharding.put_batch({"c": np.zeros(b, np.int32), "s": np.zeros(b, np.int32)}, mesh)
    with jax.set_mesh(mesh):
        out["exposure_forward_compile_s"], out["exposure_forward_temp_bytes"] = compile_time(
            node_fn, placed, jax.device_put(fbuf, repl), jax.device_put(flen, repl), spec["c"], spec["s"], None
        )
    part = timed(
        lambda: exposure.node_log_likelihoods(g, p, prefixes[:1], d, canary_R, node_R, mesh, batch_size=rows),
        args.reps,
    )
    out["exposure_forward_rows_timed"] = rows
    out["exposure_forward_timed_s"] = part
    out["exposure_forward_per_canary_s_extrapolated"] = part * m / rows
    out["exposure_speedup"] = out["exposure_forward_per_canary_s_extrapolated"] / per
    # The two methods agree on the timed nodes (a guard that the fast path computes the same thing).
    ll = exposure.all_secret_log_likelihoods(g, p, prefixes[:1], d, mesh)[0].reshape(m, 10)[node_R]
    ref = exposure.node_log_likelihoods(g, p, prefixes[:1], d, canary_R, node_R, mesh, batch_size=rows)
    out["exposure_max_abs_diff"] = float(np.abs(ll - ref).max())

    # Greedy decoding.
    steps = d + 1
    gbuf, glen = canaries.prefix_buffer(prefixes, steps)
    gb = extraction.pad_rows(len(prefixes), mesh)
    pad = np.zeros((gb, gbuf.shape[1]), np.int32)
    pad[: len(prefixes)] = gbuf
    plen = np.ones(gb, np.int32)
    plen[: len(prefixes)] = glen
    batch = sharding.put_batch({"buf": pad, "len": plen}, mesh)
    for method, fn in extraction.DECODERS.items():
        with jax.set_mesh(mesh):
            jitted = fn(g, steps, mesh, None)
            out[f"greedy_{method}_compile_s"], _ = compile_time(jitted, placed, batch["buf"], batch["len"], None)
        out[f"greedy_{method}_s"] = timed(
            lambda method=method: extraction.greedy_decode(g, p, prefixes, steps, mesh, method=method), args.reps
        )
    inc = extraction.greedy_decode(g, p, prefixes, steps, mesh, method="incremental")
    fwd = extraction.greedy_decode(g, p, prefixes, steps, mesh, method="forward")
    out["greedy_outputs_equal"] = bool(np.array_equal(inc, fwd))
    out["greedy_speedup"] = out["greedy_forward_s"] / out["greedy_incremental_s"]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lstm,gru,transformer")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--depth", type=int, default=1, help="LSTM / GRU layers")
    p.add_argument("--transformer_depth", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--digits", type=int, default=6)
    p.add_argument("--canaries", type=int, default=10, help="prefixes decoded greedily in one call")
    p.add_argument("--forward_rows", type=int, default=2048, help="level-(d-1) nodes timed for forward exposure")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "exposure_cost.json"))
    args = p.parse_args()

    mesh = sharding.make_mesh()
    results = {
        "config": vars(args),
        "devices": [str(dv) for dv in jax.devices()],
        "jax": jax.__version__,
        "load_average_before": os.getloadavg(),
        "models": {},
    }
    for name in args.models.split(","):
        r = results["models"][name] = bench_model(name, args, mesh)
        print(
            f"{name:<12} exposure/canary: incremental {r['exposure_incremental_per_canary_s']:7.2f} s, forward "
            f"{r['exposure_forward_per_canary_s_extrapolated']:7.1f} s (extrapolated from "
            f"{r['exposure_forward_rows_timed']} nodes), x{r['exposure_speedup']:.0f}; compile "
            f"{r['exposure_incremental_compile_s']:.2f} / {r['exposure_forward_compile_s']:.2f} s; tree temp "
            f"{r['exposure_incremental_temp_bytes'] / 2**20:.0f} MiB; max |diff| {r['exposure_max_abs_diff']:.1e}"
        )
        print(
            f"{'':<12} greedy {args.canaries} canaries x {args.digits + 1} bytes: incremental "
            f"{1e3 * r['greedy_incremental_s']:7.1f} ms, forward {1e3 * r['greedy_forward_s']:7.1f} ms, "
            f"x{r['greedy_speedup']:.1f}; compile {r['greedy_incremental_compile_s']:.2f} / "
            f"{r['greedy_forward_compile_s']:.2f} s; outputs equal: {r['greedy_outputs_equal']}"
        )
    results["load_average_after"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
