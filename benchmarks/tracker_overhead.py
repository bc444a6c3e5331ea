"""Train-step time with and without the per-example tracker, side by side in one run.

  python benchmarks/tracker_overhead.py                       # MLP and char transformer, N = 1e4, 1e5, 1e6
  python benchmarks/tracker_overhead.py --models=mlp --sizes=10000 --sharding=data --devices=8
  python benchmarks/tracker_overhead.py --sizes=1e4,1e5,1e6,1e7 --out=benchmarks/tracker_overhead_replicated.json

For each model and dataset size N the same jitted step is compiled twice (tracker update on / off, everything else
identical, state and tracker donated; the tracker is the engine's default, deferred: each step records its B
losses and the table is folded every N / B steps, as the engine does at each epoch's end), then timed in interleaved
blocks on pre-placed batches whose ids are drawn from [0, N). The overhead is the ratio of step times minus one,
from the median block and from the fastest block. On CPU the tracker costs microseconds, below the block-to-block
noise, so the script also times the pieces alone (200 inside one jitted loop, so no dispatch cost is counted, best
of 5): the per-step update done immediately (gather, state machine, scatter of B table rows: "immediate"), the
deferred per-step record ("record"), and the fold of the whole table ("fold", once per epoch, amortised over the
epoch's ceil(N / B) steps). "deferred / step" = (record + fold / steps per epoch) / fastest step without tracker:
the target, <= 2%. Beside them the physical limits, timed the same way: a bare B-element scatter-add into an ``[N]``
f32 array ("scatter"), the limit the target names, and a gather plus a scatter-add of B rows of the ``[N, 9]``
table ("rows"), the least an immediate per-row state machine needs.

Up-sampled runs (``train.multiplicity_path``) repeat ids within an epoch; their deferred tracker records each copy
into the slot of its occurrence number. With ``--slots`` S (default 2: every id twice, gamma = 2) the script times
that record ("up. rec."), the fold of S slots ("up. fold"), and "up. def./step" = (record + fold / ceil(N / B)) /
fastest step, the fold spread over the fewest steps an epoch can have; beside them the immediate update with the
grouping sort that repeated ids otherwise need ("grouped"), the path up-sampled runs took before slots.

With ``--sharding=data`` the engine's sharded update (``tracker.update(..., mesh=mesh)``: all-gather the batch's B
ids and losses, each device writes the rows it holds) is timed beside XLA's own partitioning of the same immediate
update ("XLA-partitioned") and beside the exchange-free update of aligned data shards ("local": record, and
deferred / step).

With ``--spans`` Sp > 0 (language models) the span tracker of ``tracker.spans`` is timed too: a third step ("spans,
min") computes the span losses beside ``loss_B`` and records into both trackers (every row has Sp spans, all valid:
the most work), and its pieces alone: the span record of B x Sp rows ("span rec."), the fold of the N x Sp span
table ("span fold"), "span def./step" = (span record + span fold / steps per epoch) / fastest step, and its ratio
to the sequence tracker's "deferred / step" ("span/seq").
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,transformer")
    p.add_argument("--sizes", default="10000,100000,1000000")
    p.add_argument("--sharding", default="replicated", choices=["replicated", "data"])
    p.add_argument("--devices", type=int, default=0, help="force this many CPU devices (0: what JAX finds)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--blocks", type=int, default=7)
    p.add_argument("--steps", type=int, default=30, help="steps per timed block")
    p.add_argument("--slots", type=int, default=2, help="record slots of the up-sampled columns (most copies of an id)")
    p.add_argument("--spans", type=int, default=0, help="Sp > 0: also time a span tracker with Sp spans per example")
    p.add_argument("--out", default="", help="write the rows to this JSON file")
    return p.parse_args()


def main():
    args = parse_args()
    if args.devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    import json

    import jax
    import numpy as np

    if args.devices > 1:  # several CPU devices on few cores: one program at a time (see tests/conftest.py)
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    from gdc import models, sharding
    from gdc import tracker as tracker_lib
    from gdc.train import setup as setup_lib
    from gdc.train import state as state_lib
    from gdc.train.step import jit_steps

    mesh = sharding.make_mesh()
    repl = sharding.replicated(mesh)
    print(
        f"jax {jax.__version__}, {jax.device_count()} x {jax.devices()[0].device_kind}, "
        f"tracker sharding={args.sharding}, batch={args.batch_size}"
    )
    header = (
        f"{'model':<12}{'N':>10}{'off, med':>10}{'on, med':>9}{'overh.':>8}{'off, min':>10}{'on, min':>9}{'overh.':>8}"
        f"{'immed. us':>11}{'record us':>11}{'fold ms':>9}{'fold/st us':>12}{'deferred/step':>15}"
        f"{'scatter us':>12}{'rows us':>9}{'record/scatter':>16}"
        f"{'grouped us':>12}{'up. rec. us':>13}{'up. fold ms':>13}{'up. def./step':>15}"
    )
    if args.sharding == "data":
        header += f"{'XLA-part. us':>14}{'local rec. us':>15}{'local def./step':>17}"
    if args.spans:
        header += f"{'spans, min':>12}{'span rec. us':>14}{'span fold ms':>14}{'span def./step':>16}{'span/seq':>10}"
    print(header + "   (step times in ms)")
    b, d = args.batch_size, jax.device_count()
    rows = []
    for name in args.models.split(","):
        seq_len = 64
        cfg = models.ModelConfig(name=name, width=128, depth=2 if name == "transformer" else 2, num_heads=4)
        graphdef, params = models.build(cfg, seed=0, seq_len=seq_len, num_features=32, num_classes=10)
        rng = np.random.default_rng(0)
        if name == "mlp":
            inputs = {
                "x": rng.normal(size=(b, 32)).astype(np.float32),
                "y": rng.integers(0, 10, b).astype(np.int32),
            }
        else:
            inputs = {
                "tokens": rng.integers(0, 256, (b, seq_len + 1)).astype(np.int32),
                "token_mask": np.ones((b, seq_len), bool),
            }
        tx, schedule = state_lib.make_optimizer(state_lib.TrainConfig(learning_rate=1e-3), 10**6)

        spans = args.spans if name != "mlp" else 0
        if spans:  # span ids 1..Sp over consecutive stretches of each row
            inputs["span"] = np.repeat(np.arange(1, spans + 1), -(-seq_len // spans))[:seq_len][None].repeat(b, 0)

        def loss_fn(p, batch, keys_B, graphdef=graphdef, spans=spans):
            if spans and "span" in batch:
                return models.per_example_span_loss(graphdef, p, batch, keys_B, spans)
            return models.per_example_loss(graphdef, p, batch, keys_B)

        for n in [int(float(s)) for s in args.sizes.split(",")]:
            batches = []
            for i in range(4):
                idx = np.random.default_rng(i).choice(n, b, replace=False).astype(np.int32)
                host = {**inputs, "index": idx, "mask": np.ones(b, bool)}
                batches.append(sharding.put_batch(host, mesh))
            runners, spe = {}, -(-n // b)
            for enabled in (False, True, "spans") if spans else (False, True):
                tcfg = tracker_lib.TrackerConfig(enabled=bool(enabled), sharding=args.sharding)
                tsh = sharding.tracker_sharding(mesh, args.sharding)
                train_fn, _, _ = jit_steps(
                    loss_fn=loss_fn,
                    tx=tx,
                    schedule=schedule,
                    tracker_cfg=tcfg,
                    steps_per_epoch=1000,
                    unique_ids=True,
                    state_sharding=repl,
                    tracker_sharding=tsh,
                    batch_sharding=sharding.batch_sharding(mesh),
                )
                host_params = jax.tree.map(np.asarray, params)  # each runner owns (and donates) its own copy
                state = state_lib.create_train_state(host_params, tx, 0)
                deferred, copies = tracker_lib.defers(tcfg), tracker_lib.pending_copies(tcfg, d, False)
                tracker = tracker_lib.ExampleTracker.create(n, d, deferred=deferred, copies=copies)
                if enabled == "spans":
                    span = tracker_lib.ExampleTracker.create(n * spans, d * spans, deferred=True, copies=copies)
                    tracker = (tracker, span)
                runners[enabled] = [train_fn, sharding.put_tree(state, repl), sharding.put_tree(tracker, tsh)]
            fold_fn = jax.jit(
                lambda t: setup_lib.fold_trackers(t, tracker_lib.TrackerConfig(sharding=args.sharding)),
                in_shardings=tsh,
                out_shardings=tsh,
                donate_argnums=0,
            )
            times, done = {k: [] for k in runners}, dict.fromkeys(runners, 0)
            plain = [{k: v for k, v in x.items() if k != "span"} for x in batches]
            with jax.set_mesh(mesh):
                for block in range(args.blocks + 1):
                    for enabled in list(runners) if block % 2 else list(runners)[::-1]:
                        fn, state, tracker = runners[enabled]
                        feed = batches if enabled == "spans" else plain
                        t0 = time.perf_counter()
                        for s in range(args.steps):
                            state, tracker, m = fn(state, tracker, feed[s % 4])
                            done[enabled] += 1
                            if enabled and done[enabled] % spe == 0:  # the epoch's end: the engine folds
                                tracker = fold_fn(tracker)
                        jax.block_until_ready((state, tracker, m))
                        if block:  # block 0 compiles and warms up
                            times[enabled].append((time.perf_counter() - t0) / args.steps)
                        runners[enabled][1:] = [state, tracker]
            off, on = statistics.median(times[False]), statistics.median(times[True])
            off_min, on_min = min(times[False]), min(times[True])
            immediate = time_update_alone(n, b, args.sharding, mesh)
            record = time_update_alone(n, b, args.sharding, mesh, defer=True)
            copies = tracker_lib.pending_copies(tracker_lib.TrackerConfig(sharding=args.sharding), d, local=False)
            fold = time_fold(n, args.sharding, mesh, copies)
            deferred = (record + fold / spe) / off_min
            scatter, rows_gs = time_bare_scatter(n, b, mesh)
            grouped = time_update_alone(n, b, args.sharding, mesh, unique=False)
            up_record = time_update_alone(n, b, args.sharding, mesh, defer=True, slots=args.slots)
            up_fold = time_fold(n, args.sharding, mesh, copies, slots=args.slots)
            up_deferred = (up_record + up_fold / spe) / off_min
            sharded = args.sharding == "data"
            xla = time_update_alone(n, b, args.sharding, mesh, explicit=False) if sharded else None
            local = time_update_alone(n, b, args.sharding, mesh, local=True, defer=True) if sharded else None
            local_fold = time_fold(n, args.sharding, mesh) if sharded else None
            local_deferred = (local + local_fold / spe) / off_min if sharded else None
            if spans:
                spans_min = min(times["spans"])
                span_record = time_update_alone(n, b, args.sharding, mesh, defer=True, spans=spans)
                span_fold = time_fold(n * spans, args.sharding, mesh, copies)
                span_deferred = (span_record + span_fold / spe) / off_min
            print(
                f"{name:<12}{n:>10}{off * 1e3:>10.3f}{on * 1e3:>9.3f}{on / off - 1:>+8.1%}"
                f"{off_min * 1e3:>10.3f}{on_min * 1e3:>9.3f}{on_min / off_min - 1:>+8.1%}"
                f"{immediate * 1e6:>11.1f}{record * 1e6:>11.1f}{fold * 1e3:>9.2f}{fold / spe * 1e6:>12.2f}"
                f"{deferred:>15.2%}{scatter * 1e6:>12.1f}{rows_gs * 1e6:>9.1f}{record / scatter:>16.1f}"
                f"{grouped * 1e6:>12.1f}{up_record * 1e6:>13.1f}{up_fold * 1e3:>13.2f}{up_deferred:>15.2%}"
                + (f"{xla * 1e6:>14.1f}{local * 1e6:>15.1f}{local_deferred:>17.2%}" if sharded else "")
                + (
                    f"{spans_min * 1e3:>12.3f}{span_record * 1e6:>14.1f}{span_fold * 1e3:>14.2f}"
                    f"{span_deferred:>16.2%}{span_deferred / deferred:>10.2f}"
                    if spans
                    else ""
                ),
                flush=True,
            )
            rows.append(
                {
                    "model": name,
                    "N": n,
                    "step_off_median_ms": off * 1e3,
                    "step_on_median_ms": on * 1e3,
                    "step_off_min_ms": off_min * 1e3,
                    "step_on_min_ms": on_min * 1e3,
                    "immediate_update_us": immediate * 1e6,
                    "immediate_over_step": immediate / off_min,
                    "record_us": record * 1e6,
                    "fold_ms": fold * 1e3,
                    "steps_per_epoch": spe,
                    "fold_per_step_us": fold / spe * 1e6,
                    "deferred_over_step": deferred,
                    "bare_scatter_us": scatter * 1e6,
                    "rows_gather_scatter_us": rows_gs * 1e6,
                    "record_over_scatter": record / scatter,
                    "slots": args.slots,
                    "immediate_grouped_us": grouped * 1e6,
                    "immediate_grouped_over_step": grouped / off_min,
                    "upsampled_record_us": up_record * 1e6,
                    "upsampled_fold_ms": up_fold * 1e3,
                    "upsampled_deferred_over_step": up_deferred,
                    "immediate_xla_partitioned_us": None if xla is None else xla * 1e6,
                    "local_record_us": None if local is None else local * 1e6,
                    "local_deferred_over_step": local_deferred,
                    **(
                        {
                            "spans": spans,
                            "step_spans_min_ms": spans_min * 1e3,
                            "span_record_us": span_record * 1e6,
                            "span_fold_ms": span_fold * 1e3,
                            "span_deferred_over_step": span_deferred,
                            "span_over_sequence": span_deferred / deferred,
                        }
                        if spans
                        else {}
                    ),
                }
            )
            if args.out:  # after every row, so a run cut short keeps what it measured
                meta = {"jax": jax.__version__, "devices": jax.device_count(), "sharding": args.sharding, "batch": b}
                with open(args.out, "w") as f:
                    json.dump({**meta, "args": vars(args), "rows": rows}, f, indent=2)


def time_update_alone(
    n: int,
    b: int,
    mode: str,
    mesh,
    explicit: bool = True,
    local: bool = False,
    defer: bool = False,
    unique: bool = True,
    slots: int = 1,
    spans: int = 0,
    inner: int = 200,
    reps: int = 5,
) -> float:
    """Seconds per tracker update, timed as ``inner`` updates inside one jitted loop (best of ``reps``).

    ``explicit``: pass the mesh to ``tracker.update`` (the engine's sharded update); False leaves the partitioning of
    a sharded table to XLA. ``local``: each device's batch rows are ids of its own row block (``data.shards`` a
    multiple of the device count), so the update exchanges nothing. ``defer``: the deferred record (ids stay
    unique between folds: 200 x B < N, or they wrap, which only changes the recorded values, not the work).
    ``unique`` False: the immediate update's grouping sort for repeated ids. ``slots`` > 1: the deferred record of
    an up-sampled run, each row into slot ``i % slots``. ``spans`` Sp > 0: the span tracker's update
    (``tracker.update_spans``: B x Sp rows, all valid) on an N x Sp table.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gdc import sharding
    from gdc import tracker as tracker_lib

    cfg = tracker_lib.TrackerConfig(sharding=mode)
    tsh = sharding.tracker_sharding(mesh, mode)
    d = jax.device_count()
    block = -(-n // d)  # rows per device
    rng = np.random.default_rng(0)
    # Ids of device k's rows go to device k's part of the batch (the layout data.shards produces).
    offset_B = np.repeat(np.arange(d) * block, b // d).astype(np.int32)
    idx0_B = np.concatenate([rng.choice(min(block, n - k * block), b // d, replace=False) for k in range(d)])
    idx0_B, offset_B = jnp.asarray(idx0_B.astype(np.int32)), jnp.asarray(offset_B)
    limit_B = jnp.minimum(block, n - offset_B)
    loss_B = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, b).astype(np.float32))
    batch_sh = sharding.batch_sharding(mesh)

    def body(i, tracker):
        # New ids every update (nothing can be hoisted out of the loop), each in its device's row block.
        idx_B = jax.lax.with_sharding_constraint(offset_B + (idx0_B + i * 7919) % limit_B, batch_sh)
        if spans:
            loss_BxSp = jnp.broadcast_to(loss_B[:, None], (b, spans))
            valid_BxSp = jnp.ones((b, spans), bool)
            kw = {"unique": unique, "mesh": mesh if explicit else None, "local": local}
            return tracker_lib.update_spans(
                tracker, idx_B, loss_BxSp, loss_BxSp, valid_BxSp, valid_BxSp[:, 0], i, i // 10, cfg, **kw
            )
        return tracker_lib.update(
            tracker,
            idx_B,
            loss_B,
            loss_B,
            jnp.ones(b, bool),
            i,
            i // 10,
            cfg,
            unique=unique,
            mesh=mesh if explicit else None,
            local=local,
            occ_B=jnp.full(b, i % slots, jnp.int32) if slots > 1 else None,
        )

    run = jax.jit(lambda t: jax.lax.fori_loop(0, inner, body, t), in_shardings=tsh, out_shardings=tsh, donate_argnums=0)
    copies = tracker_lib.pending_copies(cfg, d, local) if defer and explicit else 1
    rows = max(spans, 1)  # a span tracker: Sp rows per example
    tracker = tracker_lib.ExampleTracker.create(n * rows, d * rows, deferred=defer, copies=copies, slots=slots)
    return _best_of(run, sharding.put_tree(tracker, tsh), mesh, inner, reps)


def time_fold(n: int, mode: str, mesh, copies: int = 1, slots: int = 1, reps: int = 5) -> float:
    """Seconds per fold of a whole deferred tracker (best of ``reps``), every row holding a record in each of its
    ``slots`` (in the first of ``copies`` per-device copies)."""
    import jax
    import jax.numpy as jnp

    from gdc import sharding
    from gdc import tracker as tracker_lib

    cfg = tracker_lib.TrackerConfig(sharding=mode)
    tsh = sharding.tracker_sharding(mesh, mode)
    tracker = tracker_lib.ExampleTracker.create(n, jax.device_count(), deferred=True, copies=copies, slots=slots)
    rec = jnp.stack([jnp.full(tracker.capacity, 1065353216), jnp.zeros(tracker.capacity, jnp.int32)], axis=1)
    rec = jnp.concatenate([rec, jnp.ones_like(rec)], axis=1)  # loss 1.0, step 0, epoch 1
    rec = jnp.tile(rec, (1, slots)) + jnp.tile(jnp.int32([0, 0, 1, 0]), slots) * jnp.repeat(jnp.arange(slots), 4)
    pad = jnp.zeros(((copies - 1) * len(rec), rec.shape[1]), jnp.int32)  # slot s: step s
    tracker = tracker.replace(pending=jnp.concatenate([rec, pad]))

    def fold_and_refill(t):  # the fold clears the records: put them back so that every repetition folds N rows
        return tracker_lib.fold(t, cfg).replace(pending=t.pending)

    run = jax.jit(fold_and_refill, in_shardings=tsh, out_shardings=tsh, donate_argnums=0)
    return _best_of(run, sharding.put_tree(tracker, tsh), mesh, 1, reps)


def time_bare_scatter(n: int, b: int, mesh, inner: int = 200, reps: int = 5) -> tuple[float, float]:
    """Seconds per B-element f32 scatter-add into a replicated ``[N]`` array, and per gather + scatter-add of B rows
    of a replicated ``[N, 9]`` int32 table (the physical limits of the update)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from gdc import sharding
    from gdc import tracker as tracker_lib

    idx0_B = jnp.asarray(np.random.default_rng(0).choice(n, b, replace=False).astype(np.int32))
    loss_B = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, b).astype(np.float32))

    def body(i, x_N):
        return x_N.at[(idx0_B + i * 7919) % n].add(loss_B, mode="drop")

    def rows(i, t_NxF):
        idx_B = (idx0_B + i * 7919) % n
        return t_NxF.at[idx_B].add(t_NxF[idx_B] + 1, mode="drop")

    repl = sharding.replicated(mesh)
    times = []
    for fn, x in ((body, jnp.zeros(n, jnp.float32)), (rows, jnp.zeros((n, len(tracker_lib.COLUMNS)), jnp.int32))):
        run = jax.jit(
            lambda x, fn=fn: jax.lax.fori_loop(0, inner, fn, x), in_shardings=repl, out_shardings=repl, donate_argnums=0
        )
        times.append(_best_of(run, sharding.put_tree(x, repl), mesh, inner, reps))
    return times[0], times[1]


def _best_of(run, x, mesh, inner: int, reps: int) -> float:
    import jax

    with jax.set_mesh(mesh):
        x = jax.block_until_ready(run(x))
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            x = jax.block_until_ready(run(x))
            best = min(best, (time.perf_counter() - t0) / inner)
    return best


if __name__ == "__main__":
    main()
