"""Engine costs measured side by side in one run, per model: compile once, AOT compile vs step time and the compiled
step's memory, data pipeline vs a pre-placed batch, K scoring passes vs K ideal forward passes, and our on-device
tracker vs the anchors' ways of recording dynamics.

  python benchmarks/engine_costs.py                          # MLP and char transformer; writes engine_costs.json
  python benchmarks/engine_costs.py --models=mlp --epochs=2  # quicker

Sections (each on the engine's own calls, built as training builds them by gdc.train.setup.build and
gdc.train.inputs; 1 device, replicated tracker):
  compile: ``lower().compile()`` time vs the median steady-state step; ``compiled.memory_analysis()``; the jit cache
    size of the train step after --epochs epochs (full and padded final batches) and after a pruned epoch (keep_idx,
    an intervention), which must stay 1; and the same AOT time (vs one call) and memory of the scanned calls that
    default runs make (--steps_per_call steps over resident rows or over a host chunk).
  pipeline: steps/s of the loop's input paths vs the same step on one pre-placed batch (target: within 5%):
    EpochIterator + put_batch in the loop (data.on_device=0, data.prefetch=0), the same read ahead by a Prefetcher
    thread (data.prefetch=2, the accelerator default), and the device-resident set (data.on_device: arrays uploaded
    once, the epoch's ids once per epoch, the step gathers its rows), one step per call ("on_device") and
    --steps_per_call steps per call ("on_device_scan", the default run's path: train.steps_per_call=-1); and host
    batches --steps_per_call at a time, stacked by one gather and placed as one chunk (``EpochIterator.chunk``,
    ``put_chunk``), in the loop ("pipeline_scan") or read ahead by the thread ("prefetch_scan"). The scanned paths
    are also compared with the same scan over the block's batches placed beforehand ("preplaced_scan"; distinct
    batches, since XLA hoists the work of a loop-invariant one out of the scan), which isolates their data path.
    Blocks of the paths are interleaved over --pipeline_reps repeats; per path the process CPU time per step, the ratio
    of median blocks, of the fastest blocks (the least disturbed by the rest of the machine) and the median and
    quartiles of the per-repeat ratios (each block against the baseline block of its own repeat).
  scoring passes: (epoch with K fixed-parameter scoring passes) - (epoch without) vs K x (one forward-only pass over
    the training set with eval_step); measured / ideal, for host batches (16 per call) and for data.on_device.
  anchors: one training epoch each, (a) ours: the step records into the deferred tracker, folded at the epoch's
    end, one device-to-host copy per epoch written to .npz; (b) example-forgetting style: tracker off, per-example
    losses/accuracies copied to host every step and appended to Python lists keyed by example id; (c)
    dataset-cartography style: tracker off, plus an extra full forward pass per epoch writing each example's
    outputs as a JSON line; all vs (d) tracker off, nothing recorded.
Times are medians of --reps repeats (interleaved where compared). The machine may be shared: read the ratios.
"""

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def setup(name: str, n: int, batch_size: int, tracker_kw: dict):
    """The engine's ``Run`` (``gdc.train.setup.build``, as training builds it) on ``n`` random examples and one
    device with the tracker of ``tracker_kw``, and a train step that also returns the per-example losses (what the
    anchors' code copies to the host)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gdc import losses, models, sharding
    from gdc import tracker as tracker_lib
    from gdc.checkpoint import CheckpointConfig
    from gdc.data import sources
    from gdc.logs import LogConfig
    from gdc.train import setup as setup_lib
    from gdc.train import state as state_lib
    from gdc.train.config import RunConfig
    from gdc.train.step import example_keys

    seq_len = 64
    rng = np.random.default_rng(0)
    if name == "mlp":
        arrays = {"x": rng.normal(size=(n, 32)).astype(np.float32), "y": rng.integers(0, 10, n).astype(np.int32)}
        model = models.ModelConfig(name="mlp", width=128, depth=2)
    else:
        arrays = {
            "tokens": rng.integers(0, 256, (n, seq_len + 1)).astype(np.int32),
            "token_mask": np.ones((n, seq_len), bool),
        }
        model = models.ModelConfig(name="transformer", width=64, depth=2, num_heads=4)
    cfg = RunConfig(
        seed=0,
        data=sources.DataConfig(seq_len=seq_len),
        model=model,
        train=state_lib.TrainConfig(batch_size=batch_size, learning_rate=1e-3, total_steps=10**6),
        tracker=tracker_lib.TrackerConfig(**tracker_kw),
        checkpoint=CheckpointConfig(),
        log=LogConfig(),
    )
    train = {**arrays, "source_id": np.arange(n, dtype=np.int32)}
    dataset = sources.Dataset(train=train, heldout={}, meta={"num_features": 32, "num_classes": 10})
    run = setup_lib.build(cfg, dataset, sharding.make_mesh(jax.devices()[:1]))
    loss_fn, tx = run.engine.loss_fn, run.engine.tx

    def step_with_losses(state, batch):
        keys_B = example_keys(state.key, state.step, batch["index"])

        def objective(p):
            loss_B, acc_B = loss_fn(p, batch, keys_B)
            return losses.weighted_mean(loss_B, batch["mask"]), (loss_B, acc_B)

        (_, (loss_B, acc_B)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), loss_B, acc_B

    return run, jax.jit(step_with_losses, donate_argnums=0)


def median_time(fn, reps: int) -> float:
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_model(name: str, args) -> dict:
    import jax
    import numpy as np

    from gdc import sharding
    from gdc import tracker as tracker_lib
    from gdc.data.pipeline import (
        CallIterator,
        EpochIterator,
        Prefetcher,
        sequential_batches,
        sequential_chunks,
    )
    from gdc.train import inputs
    from gdc.train import setup as setup_lib
    from gdc.train.loop import SCORE_CHUNK

    n, b = (args.n_mlp, 128) if name == "mlp" else (args.n_transformer, 32)
    out = {"n": n, "batch": b}
    run, with_losses = setup(name, n, b, {})
    arrays, it, mesh = run.train_arrays, run.it, run.mesh
    train_fn, eval_fn, fold_fn = run.engine.train, run.engine.evaluate, run.engine.fold
    state, tracker = run.state, run.tracker
    spe = it.steps_per_epoch
    assert n % b, "n must leave a padded final batch"

    with jax.set_mesh(mesh):
        # ---------------------------------------------------------------------------------------------------------
        # Compile once; AOT compile time vs step time; memory analysis.
        # ---------------------------------------------------------------------------------------------------------
        first = sharding.put_batch(it.batch(0, 0), mesh)
        t_lower, t_compile, memory = aot(train_fn, state, tracker, first)
        step_times = []
        for epoch in range(args.epochs):
            for pos in range(spe):
                batch = sharding.put_batch(it.batch(epoch, pos), mesh)
                t0 = time.perf_counter()
                state, tracker, m = train_fn(state, tracker, batch)
                jax.block_until_ready(m)
                step_times.append(time.perf_counter() - t0)
            tracker = fold_fn(tracker)
        after_epochs = train_fn._cache_size()
        pruned = EpochIterator(arrays, b, 0, keep_idx=np.arange(0, n, 3))  # an intervention: 1/3 of the ids
        for pos in range(pruned.steps_per_epoch):
            state, tracker, m = train_fn(state, tracker, sharding.put_batch(pruned.batch(0, pos), mesh))
        tracker = fold_fn(tracker)
        jax.block_until_ready(m)
        step = statistics.median(step_times[1:])
        out["compile"] = {
            "lower_s": t_lower,
            "compile_s": t_compile,
            "steady_step_ms": step * 1e3,
            "compile_over_step": t_compile / step,
            "memory_analysis": memory,
            "jit_cache_size_after_epochs": after_epochs,
            "jit_cache_size_after_pruned_epoch": train_fn._cache_size(),
            "epochs": args.epochs,
            "padded_final_batch_rows": int(n % b),
        }

        # ---------------------------------------------------------------------------------------------------------
        # Data pipeline vs a pre-placed batch.
        # ---------------------------------------------------------------------------------------------------------
        g = args.steps_per_call
        steps = min(spe, args.pipeline_steps) // g * g
        fixed = sharding.put_batch(it.batch(1, 0), mesh)
        repl = run.engine.state_sharding
        table = inputs.resident_table(run)
        resident_fn, resident_scan_fn = inputs.jit_resident(run), inputs.jit_resident(run, steps_per_call=g)

        # A scan of g steps over a placed chunk of g batches: host chunks placed in the loop, or (the baseline of
        # the scanned paths) chunks placed beforehand.
        chunk_fn = inputs.jit_host_chunk(run)
        # The block's batches, all placed beforehand, g per chunk: one batch repeated would be loop-invariant, and XLA
        # would hoist its batch-only work (label one-hots, mask sums, the record's indices) out of the scan; and the
        # same few ids every call would keep the tracker rows they touch in cache.
        placed_chunks = [
            sharding.put_chunk({k: np.stack([it.batch(1, c * g + t)[k] for t in range(g)]) for k in fixed}, mesh)
            for c in range(steps // g)
        ]

        def run_pipeline():
            nonlocal state, tracker
            for pos in range(steps):
                state, tracker, m = train_fn(state, tracker, sharding.put_batch(it.batch(2, pos), mesh))
            tracker = fold_fn(tracker)  # the epoch's fold, in every path alike
            jax.block_until_ready((state, tracker))

        def run_prefetch():
            nonlocal state, tracker
            source = EpochIterator(arrays, b, 0, epoch=2)
            with Prefetcher(source, lambda x: sharding.put_batch(x, mesh), 2) as feed:
                for _ in range(steps):
                    _, _, batch = next(feed)
                    state, tracker, m = train_fn(state, tracker, batch)
                tracker = fold_fn(tracker)  # the epoch's fold, in every path alike
                jax.block_until_ready((state, tracker))

        def run_pipeline_scan():
            nonlocal state, tracker
            for c in range(steps // g):
                state, tracker, m = chunk_fn(state, tracker, sharding.put_chunk(it.chunk(2, c * g, g), mesh))
            tracker = fold_fn(tracker)
            jax.block_until_ready((state, tracker))

        def run_prefetch_scan():
            nonlocal state, tracker
            source = CallIterator(EpochIterator(arrays, b, 0, epoch=2), lambda _: g, 0)
            with Prefetcher(source, lambda x: (x[0], sharding.put_chunk(x[1], mesh)), 2) as feed:
                for _ in range(steps // g):
                    _, _, (_, chunk) = next(feed)
                    state, tracker, m = chunk_fn(state, tracker, chunk)
                tracker = fold_fn(tracker)
                jax.block_until_ready((state, tracker))

        def run_on_device():
            nonlocal state, tracker
            order = sharding.put_tree(it.epoch_order(2), repl)  # as the loop: once per epoch
            for _ in range(steps):
                state, tracker, m = resident_fn(state, tracker, table, order)
            tracker = fold_fn(tracker)  # the epoch's fold, in every path alike
            jax.block_until_ready((state, tracker))

        def run_on_device_scan():
            nonlocal state, tracker
            order = sharding.put_tree(it.epoch_order(2), repl)
            for _ in range(steps // g):
                state, tracker, m = resident_scan_fn(state, tracker, table, order)
            tracker = fold_fn(tracker)
            jax.block_until_ready((state, tracker))

        def run_preplaced_scan():
            nonlocal state, tracker
            for chunk in placed_chunks:
                state, tracker, m = chunk_fn(state, tracker, chunk)
            tracker = fold_fn(tracker)
            jax.block_until_ready((state, tracker))

        def run_preplaced():
            nonlocal state, tracker
            for _ in range(steps):
                state, tracker, m = train_fn(state, tracker, fixed)
            # The one batch repeats its ids, so their records add up until the fold: the same work, values unused.
            tracker = fold_fn(tracker)  # the epoch's fold, in every path alike
            jax.block_until_ready((state, tracker))

        paths = {
            "pipeline": run_pipeline,
            "prefetch": run_prefetch,
            "on_device": run_on_device,
            "pipeline_scan": run_pipeline_scan,
            "prefetch_scan": run_prefetch_scan,
            "on_device_scan": run_on_device_scan,
            "preplaced_scan": run_preplaced_scan,
            "preplaced": run_preplaced,
        }
        scanned = ("pipeline_scan", "prefetch_scan", "on_device_scan")
        baseline = {k_: "preplaced" for k_ in paths} | {f"{k_}_vs_scan": "preplaced_scan" for k_ in scanned}
        for f in paths.values():
            f()  # compile, warm up
        wall = {k_: [] for k_ in paths}
        cpu = {k_: [] for k_ in paths}
        for r in range(args.pipeline_reps):
            for k_, f in list(paths.items())[:: 1 if r % 2 else -1]:
                t0, c0 = time.perf_counter(), time.process_time()
                f()
                wall[k_].append(time.perf_counter() - t0)
                cpu[k_].append(time.process_time() - c0)
        sps = {k_: steps / statistics.median(v) for k_, v in wall.items()}
        out["pipeline"] = {"steps": steps, "steps_per_call": g, "reps": args.pipeline_reps}
        for k_ in paths:
            out["pipeline"][f"steps_per_s_{k_}"] = sps[k_]
            out["pipeline"][f"cpu_ms_per_step_{k_}"] = statistics.median(cpu[k_]) / steps * 1e3
        for key, base in baseline.items():
            k_ = key.removesuffix("_vs_scan")
            if k_ == base:
                continue
            out["pipeline"][f"ratio_{key}"] = sps[k_] / sps[base]
            # Fastest block of each (the least disturbed by the rest of the machine), as in tracker_overhead.py.
            out["pipeline"][f"ratio_best_{key}"] = min(wall[base]) / min(wall[k_])
            paired = [tb / tk for tb, tk in zip(wall[base], wall[k_], strict=True)]
            out["pipeline"][f"ratio_paired_{key}"] = statistics.quantiles(paired, n=4)  # quartiles
        out["pipeline"]["ratio"] = out["pipeline"]["ratio_pipeline"]
        # The scanned calls a default run makes: AOT compile time vs one call, and their memory (the chunk's g
        # batches and the scan's temporaries).
        order = sharding.put_tree(it.epoch_order(2), repl)
        scanned_calls = {  # new jitted objects: the timed ones are compiled already
            "on_device_scan": (inputs.jit_resident(run, steps_per_call=g), (state, tracker, table, order)),
            "pipeline_scan": (inputs.jit_host_chunk(run), (state, tracker, placed_chunks[0])),
        }
        out["compile"]["scanned"] = {}
        for k_, (fn, fn_args) in scanned_calls.items():
            t_l, t_c, mem = aot(fn, *fn_args)
            call_s = g / sps[k_]
            out["compile"]["scanned"][k_] = {
                "steps_per_call": g,
                "lower_s": t_l,
                "compile_s": t_c,
                "call_ms": call_s * 1e3,
                "compile_over_call": t_c / call_s,
                "memory_analysis": mem,
            }

        # ---------------------------------------------------------------------------------------------------------
        # K scoring passes vs K ideal forward passes.
        # ---------------------------------------------------------------------------------------------------------
        k = args.passes
        placed = [sharding.put_batch(it.batch(3, pos), mesh) for pos in range(spe)]
        seq = [sharding.put_batch(x, mesh) for x in sequential_batches(arrays, b)]
        chunk_size = min(SCORE_CHUNK, len(seq))
        score_chunk_fn = run.engine.score_chunk
        tmp = tempfile.mkdtemp()
        positions = {max(1, round((i + 1) * spe / k)) for i in range(k)}

        resident_score_fn = inputs.jit_resident_scorer(run)
        score_ids = inputs.score_id_chunks(run, chunk_size)
        # The passes feed a tracker of their own (the loop's train step leaves the tracker to them when K > 0; here
        # the train step is the same in both epochs, so the difference is the passes' work alone).
        passes_tracker = setup_lib.initial_tracker(run.cfg, n, mesh, it.max_occurrences)

        def epoch(with_passes: bool, on_device: bool = False):
            nonlocal state, tracker, passes_tracker
            pt = passes_tracker
            for pos in range(spe):
                state, tracker, m = train_fn(state, tracker, placed[pos])
                if with_passes and pos + 1 in positions:  # as the loop's scoring_pass, host batches included
                    s_arr, e_arr = jax.numpy.int32(0), jax.numpy.int32(0)
                    parts = []
                    if on_device:  # data.on_device: rows gathered from the device table
                        for ids_GxB in score_ids:
                            pt, loss_GxB = resident_score_fn(state.params, pt, table, ids_GxB, s_arr, e_arr)
                            parts.append(loss_GxB.reshape(-1))
                    for chunk in [] if on_device else sequential_chunks(arrays, b, chunk_size):
                        pt, loss_GxB = score_chunk_fn(state.params, pt, sharding.put_chunk(chunk, mesh), s_arr, e_arr)
                        parts.append(loss_GxB.reshape(-1))
                    pt = fold_fn(pt)  # the pass's fold
                    loss_N = np.asarray(jax.device_get(jax.numpy.concatenate(parts)))[:n]  # one copy, as the loop
                    np.save(os.path.join(tmp, f"pass_{pos}.npy"), loss_N)
            tracker = fold_fn(tracker)  # the epoch's fold
            passes_tracker = pt
            jax.block_until_ready((state, tracker, pt))

        def forward_pass():
            sums = [eval_fn(state.params, x) for x in seq]
            jax.block_until_ready(sums)

        epoch(True)  # compile score_chunk_fn
        epoch(True, on_device=True)
        forward_pass()
        t_with, t_with_dev, t_without, t_fwd = [], [], [], []
        for _ in range(args.reps):
            for f, acc in (
                (lambda: epoch(True), t_with),
                (lambda: epoch(True, on_device=True), t_with_dev),
                (lambda: epoch(False), t_without),
                (forward_pass, t_fwd),
            ):
                t0 = time.perf_counter()
                f()
                acc.append(time.perf_counter() - t0)
        measured = statistics.median(t_with) - statistics.median(t_without)
        measured_dev = statistics.median(t_with_dev) - statistics.median(t_without)
        ideal = k * statistics.median(t_fwd)
        out["scoring_passes"] = {
            "K": k,
            "epoch_s_without": statistics.median(t_without),
            "epoch_s_with": statistics.median(t_with),
            "measured_extra_s": measured,
            "ideal_K_forward_s": ideal,
            "measured_over_ideal": measured / ideal,
            "epoch_s_with_on_device": statistics.median(t_with_dev),
            "measured_extra_on_device_s": measured_dev,
            "measured_over_ideal_on_device": measured_dev / ideal,
        }

        # ---------------------------------------------------------------------------------------------------------
        # Ours vs the anchors' ways of recording dynamics (one epoch each).
        # ---------------------------------------------------------------------------------------------------------
        off, _ = setup(name, n, b, {"enabled": False})
        off_train = off.engine.train
        off_state, off_tracker = off.state, off.tracker
        ws = with_losses
        ws_state = setup(name, n, b, {"enabled": False})[0].state  # its own copy: the step donates it
        per_ex = jax.jit(lambda p, batch: off.engine.loss_fn(p, batch, None))

        def ours():
            nonlocal state, tracker
            for pos in range(spe):
                state, tracker, m = train_fn(state, tracker, placed[pos])
            tracker = fold_fn(tracker)
            fields = tracker_lib.to_numpy(tracker)
            np.savez(os.path.join(tmp, "epoch.npz"), **fields)

        def bare():
            nonlocal off_state, off_tracker
            for pos in range(spe):
                off_state, off_tracker, m = off_train(off_state, off_tracker, placed[pos])
            jax.block_until_ready(off_state)

        history = collections.defaultdict(list)

        def forgetting_style():
            nonlocal ws_state
            for pos in range(spe):
                ws_state, loss_B, acc_B = ws(ws_state, placed[pos])
                idx = np.asarray(placed[pos]["index"])
                loss_h, acc_h = np.asarray(loss_B), np.asarray(acc_B)  # device-to-host copy every step
                for i, lo, ac in zip(idx.tolist(), loss_h.tolist(), acc_h.tolist(), strict=True):
                    if i < n:
                        history[i].append((lo, ac))

        def cartography_style():
            nonlocal off_state, off_tracker
            for pos in range(spe):
                off_state, off_tracker, m = off_train(off_state, off_tracker, placed[pos])
            with open(os.path.join(tmp, "dynamics_epoch.jsonl"), "w") as f:  # extra forward pass, outputs to a file
                for x in seq:
                    loss_B, acc_B = per_ex(off_state.params, x)
                    idx, lo, ac = (np.asarray(v) for v in (x["index"], loss_B, acc_B))
                    for i, li, ai in zip(idx.tolist(), lo.tolist(), ac.tolist(), strict=True):
                        if i < n:
                            f.write(json.dumps({"guid": i, "loss": li, "acc": ai}) + "\n")

        variants = {
            "bare (tracker off, nothing recorded)": bare,
            "ours (on-device tracker, 1 copy/epoch)": ours,
            "forgetting-style (host copy every step)": forgetting_style,
            "cartography-style (extra forward pass + jsonl)": cartography_style,
        }
        for f in variants.values():
            f()  # compile
        times = {k_: [] for k_ in variants}
        for r in range(args.reps):
            for k_, f in list(variants.items())[:: 1 if r % 2 else -1]:
                t0 = time.perf_counter()
                f()
                jax.block_until_ready((state, off_state, ws_state))
                times[k_].append(time.perf_counter() - t0)
        base = statistics.median(times["bare (tracker off, nothing recorded)"])
        out["anchors"] = {
            k_: {"epoch_s": statistics.median(v), "overhead_vs_bare": statistics.median(v) / base - 1}
            for k_, v in times.items()
        }
    return out


def aot(fn, *args) -> tuple[float, float, dict[str, int]]:
    """``fn.lower(*args)`` and ``.compile()`` times (s) and the compiled program's ``memory_analysis()``."""
    t0 = time.perf_counter()
    lowered = fn.lower(*args)
    t_lower = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    t_compile = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    keys = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes", "temp_size_in_bytes")
    keys += ("generated_code_size_in_bytes",)
    return t_lower, t_compile, {k: int(getattr(mem, k)) for k in keys if mem is not None and hasattr(mem, k)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,transformer")
    p.add_argument("--n_mlp", type=int, default=20_000)
    p.add_argument("--n_transformer", type=int, default=1_000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--pipeline_steps", type=int, default=100)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pipeline_reps", type=int, default=21, help="interleaved repeats of the pipeline blocks")
    p.add_argument("--steps_per_call", type=int, default=16, help="the resident scan's steps per call")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_costs.json"))
    args = p.parse_args()
    if args.pipeline_reps < 2:
        p.error(f"--pipeline_reps={args.pipeline_reps}: use at least 2 (the per-repeat ratios' quartiles need two).")
    import jax

    results = {"jax": jax.__version__, "device": jax.devices()[0].device_kind, "config": vars(args), "models": {}}
    for name in args.models.split(","):
        r = results["models"][name] = bench_model(name, args)
        c, pl, sp = r["compile"], r["pipeline"], r["scoring_passes"]
        print(f"{name} (N = {r['n']}, B = {r['batch']})")
        print(
            f"  compile: lower {c['lower_s']:.2f} s, compile {c['compile_s']:.2f} s = {c['compile_over_step']:.0f} "
            f"steady steps of {c['steady_step_ms']:.2f} ms; jit cache size after {c['epochs']} epochs (padded last "
            f"batch) {c['jit_cache_size_after_epochs']}, after a pruned epoch {c['jit_cache_size_after_pruned_epoch']}"
        )
        print(f"  memory_analysis: {c['memory_analysis']}")
        for k, v in c["scanned"].items():
            print(
                f"  {k} ({v['steps_per_call']} steps per call): lower {v['lower_s']:.2f} s, compile "
                f"{v['compile_s']:.2f} s = {v['compile_over_call']:.0f} calls of {v['call_ms']:.2f} ms; "
                f"memory_analysis: {v['memory_analysis']}"
            )
        print(
            f"  pipeline (steps/s, ratio to pre-placed, CPU ms/step): pre-placed {pl['steps_per_s_preplaced']:.1f} "
            f"({pl['cpu_ms_per_step_preplaced']:.2f})"
        )
        scanned = ("pipeline_scan", "prefetch_scan", "on_device_scan")
        vs_scan = tuple(f"{k}_vs_scan" for k in scanned)
        for key in ("pipeline", "prefetch", "on_device", *scanned, "preplaced_scan", *vs_scan):
            k_ = key.removesuffix("_vs_scan")
            q1, q2, q3 = pl[f"ratio_paired_{key}"]
            print(
                f"    {key:<22} {pl[f'steps_per_s_{k_}']:8.1f}  {pl[f'ratio_{key}']:.3f}  "
                f"({pl[f'cpu_ms_per_step_{k_}']:.2f})  fastest blocks: {pl[f'ratio_best_{key}']:.3f}  "
                f"per repeat: {q2:.3f} [{q1:.3f}, {q3:.3f}]"
            )
        print(
            f"  scoring passes K={sp['K']}: measured extra {sp['measured_extra_s']:.3f} s vs ideal "
            f"{sp['ideal_K_forward_s']:.3f} s: {sp['measured_over_ideal']:.2f}x; with data.on_device "
            f"{sp['measured_extra_on_device_s']:.3f} s: {sp['measured_over_ideal_on_device']:.2f}x"
        )
        for k, v in r["anchors"].items():
            print(f"  {k:<48} {v['epoch_s']:.3f} s/epoch  overhead {v['overhead_vs_bare']:+.1%}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
