"""Counterfactual-memorization ensembles: K models as one vmapped program vs K sequential runs, side by side.

  python benchmarks/counterfactual_ensemble.py              # K = 16 on 8 host devices; writes the JSON next to it
  python benchmarks/counterfactual_ensemble.py --devices=1  # one device: no split variants

Models: a GRU (width 128) and a 2-layer transformer (width 128, 4 heads) on pydoc_canaries sequences of length 64
(--examples, --epochs, batch 32), and the classify study's MLP (width 64, depth 2) on its synthetic pool (1000
examples, batch 50, --mlp_epochs).

For each model, K models on random halves (``gdc.influence.counterfactual.subset_masks``) are trained from the same
initial parameters, keys and subsets by
  * sequential: ``train_sequential``, K calls of one jitted single-model scan (compiled once), on one device;
  * vmap: ``train_ensemble``, one jitted ``lax.scan`` vmapped over all K models, on one device;
  * vmap_split: the same with ``mesh=`` over --devices CPU devices (``--xla_force_host_platform_device_count``;
    each device trains K / devices of the models in one vmap, no communication);
  * map_split: as vmap_split with ``vmap_size=1``: each device trains its models one after another.
jax's default threading otherwise (XLA's intra-op thread pool over every core, shared by the devices). Throughput =
examples trained (the members of every model, times epochs) / wall-clock seconds of a call after compilation, the
median over --repeats calls, the variants interleaved so that load on a shared machine hits them alike. Compile time
= the first call minus the median call (the first call compiles). Ratio = variant examples/s / sequential examples/s
(of the medians; ``ratio_best`` of the fastest calls, the ones other processes disturbed least).
The parameters of each variant are compared with the sequential ones (max abs difference).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MODELS = {
    "gru": dict(name="gru", width=128, depth=1),
    "transformer": dict(name="transformer", width=128, depth=2, num_heads=4),
    "mlp": dict(name="mlp", width=64, depth=2),  # the classify study's shadow models
}


VARIANTS = ("sequential", "vmap", "vmap_split", "map_split")


def _set_devices(devices: int) -> None:
    """Host devices must be requested before jax is imported (nothing here imports it at module level)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if devices > 1 and "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()


def setup(name: str, n: int, seq_len: int):
    from gdc import models
    from gdc.data import sources

    if name == "mlp":
        ds = sources.build_dataset(sources.DataConfig(source="synthetic", num_examples=n * 10 // 9 + 2, max_examples=n))
        data = {"x": ds.train["x"], "y": ds.train["y"]}
        shapes = dict(num_features=ds.train["x"].shape[1], num_classes=ds.meta["num_classes"])
    else:
        ds = sources.build_dataset(sources.DataConfig(source="pydoc_canaries", seq_len=seq_len, max_examples=n))
        data = {"tokens": ds.train["tokens"], "token_mask": ds.train["token_mask"]}
        shapes = dict(vocab_size=sources.VOCAB_SIZE, seq_len=seq_len)
    return models.ModelConfig(**MODELS[name]), data, shapes


def timed(fn):
    """(wall seconds, this process's CPU seconds, result) of one call, blocked on."""
    import jax

    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    jax.block_until_ready(out.params)
    return time.perf_counter() - start, time.process_time() - cpu, out


def busy_processes() -> list[str]:
    """Other Python processes using CPU now (``ps``), to say what shared the machine: "%cpu command" (truncated)."""
    import subprocess

    rows = subprocess.run(["ps", "-eo", "pid,pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout
    out = []
    for line in rows.splitlines()[1:]:
        pid, pcpu, cmd = line.split(None, 2)
        if int(pid) != os.getpid() and float(pcpu) >= 5 and "python" in cmd.split()[0]:
            out.append(f"{pcpu}% {cmd[:120]}")
    return out


def bench_model(name: str, args) -> dict:
    import jax
    import numpy as np

    from gdc import sharding
    from gdc.influence import counterfactual as cf
    from gdc.train.state import TrainConfig

    n = args.mlp_examples if name == "mlp" else args.examples
    epochs = args.mlp_epochs if name == "mlp" else args.epochs
    batch_size = args.mlp_batch_size if name == "mlp" else args.batch_size
    model_cfg, data, shapes = setup(name, n, args.seq_len)
    n = next(iter(data.values())).shape[0]
    graphdef, params_K = cf.init_ensemble(model_cfg, range(args.k), **shapes)
    in_KxN = cf.subset_masks(0, args.k, n)
    cfg = TrainConfig(batch_size=batch_size, num_epochs=epochs, optimizer="adam", learning_rate=1e-3)
    examples = int(in_KxN.sum()) * epochs

    def ensemble(**kw):
        return lambda: cf.train_ensemble(graphdef, params_K, data, in_KxN, cfg, seed=0, **kw)

    runs = {
        "sequential": lambda: cf.train_sequential(graphdef, params_K, data, in_KxN, cfg, seed=0),
        "vmap": ensemble(),
    }
    if jax.device_count() > 1:
        mesh = sharding.make_mesh()
        runs["vmap_split"] = ensemble(mesh=mesh)
        runs["map_split"] = ensemble(mesh=mesh, vmap_size=1)
    first, outs, times, cpus = {}, {}, {k: [] for k in runs}, {k: [] for k in runs}
    for variant, fn in runs.items():
        first[variant], _, outs[variant] = timed(fn)
    for _ in range(args.repeats):
        for variant, fn in runs.items():
            wall, cpu, _ = timed(fn)
            times[variant].append(wall)
            cpus[variant].append(cpu)

    def diff(variant):
        pairs = zip(jax.tree.leaves(outs[variant].params), jax.tree.leaves(outs["sequential"].params), strict=True)
        return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in pairs)

    res = {
        "model": MODELS[name],
        "k": args.k,
        "examples_N": n,
        "epochs": epochs,
        "batch_size": batch_size,
        "seq_len": args.seq_len if name != "mlp" else None,
        "steps_per_model": cf.steps_per_epoch(in_KxN, batch_size) * epochs,
        "examples_trained": examples,
    }
    for variant in runs:
        med = statistics.median(times[variant])
        res[variant] = {
            "seconds": times[variant],
            "median_s": med,
            "cpu_seconds": cpus[variant],  # this process's CPU time per call (all its threads)
            "examples_per_s": examples / med,
            "compile_s": first[variant] - med,
            "min_s": min(times[variant]),
            "ratio": statistics.median(times["sequential"]) / med,
            "ratio_best": min(times["sequential"]) / min(times[variant]),  # best of --repeats: the least disturbed
            "max_abs_param_diff": diff(variant),
        }
    return res


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gru,transformer,mlp")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--examples", type=int, default=384, help="pydoc_canaries training sequences")
    p.add_argument("--seq_len", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--mlp_examples", type=int, default=1000, help="synthetic pool (the classify study's)")
    p.add_argument("--mlp_epochs", type=int, default=60)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--mlp_batch_size", type=int, default=50)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--devices", type=int, default=8, help="CPU devices for the *_split variants (1: none)")
    p.add_argument(
        "--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "counterfactual_ensemble.json")
    )
    args = p.parse_args()
    _set_devices(args.devices)

    import jax

    results = {
        "jax": jax.__version__,
        "device": jax.devices()[0].device_kind,
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "args": vars(args),
        "load_average_before": os.getloadavg(),
        "busy_processes_before": busy_processes(),
        "models": {},
    }
    for name in args.models.split(","):
        res = bench_model(name, args)
        results["models"][name] = res
        print(f"{name} K={res['k']} N={res['examples_N']} epochs={res['epochs']}:", flush=True)
        for variant in VARIANTS:
            if variant in res:
                v = res[variant]
                print(
                    f"  {variant:15s} {v['examples_per_s']:9.0f} ex/s  compile {v['compile_s']:5.1f} s  "
                    f"ratio {v['ratio']:.2f}x (best of {args.repeats}: {v['ratio_best']:.2f}x)  "
                    f"max |param diff| {v['max_abs_param_diff']:.1e}",
                    flush=True,
                )
    results["load_average_after"] = os.getloadavg()
    results["busy_processes_after"] = busy_processes()
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
