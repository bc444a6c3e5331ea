"""Per-example gradient reductions vs the plain batch gradient, examples/s side by side in one run.

  python benchmarks/per_example_grads.py          # MLP (B = 256) and char transformer (B = 32); writes the JSON

Every variant computes, for the same batch and parameters, one of:
  * plain: the gradient of the batch-mean loss (one backward pass; the baseline);
  * norms, gdc chunked: ``gdc.influence.grads.grad_sq_norms`` (vmap(grad) over chunks inside lax.map, each gradient
    reduced to its squared norm before the chunk ends);
  * norms, one vmap: vmap(grad) over the whole batch, then the norms (the [B, P] block exists at once);
  * clipped sum, one vmap: DP-SGD's reduction, ``optax.per_example_global_norm_clip`` (clip each example's gradient
    to norm 1 and sum) on vmap(grad) over the whole batch;
  * clipped sum, optax.microbatch: the same per-example clipping inside ``optax.microbatch`` (a fori_loop over
    microbatches of --micro examples, summing the clipped sums and concatenating the norms);
  * norms, ghost: ``gdc.influence.ghost.ghost_sq_norms``, exact norms from layer inputs and output gradients of one
    backward pass (``||x||^2 ||d||^2`` per dense layer, Gram forms over a sequence), no per-example gradient formed;
  * clipped sum, ghost (book-keeping): the ghost norms give the clip factors c_i, then ``sum_i c_i X_i^T D_i`` per
    layer from the inputs and output gradients the norm pass holds (``gdc.influence.ghost.ghost_clipped_grad``);
  * clipped sum, ghost + 2nd backward: the same clip factors, then one ordinary backward pass of ``sum_i c_i L_i``
    (``two_pass=True``).
  * clipped sum, jax_privacy: ``jax_privacy.clipping.clipped_grad`` with ``return_grad_norms=True`` (the DP library's
    own clipped-gradient transform: vmap(grad) per example, clip, sum), over the whole batch and with its
    ``microbatch_size=--micro``.
Timings: median over --blocks blocks of --steps calls, each call's result blocked on; ratio = examples/s of the
variant / examples/s of plain.
"""

import argparse
import importlib.metadata
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_variants(graphdef, unravel, b: int, micro: int) -> dict:
    """The jitted variants for one model (closures only: jit would trace default arguments)."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax_privacy import clipping as dp_clipping

    from gdc import models
    from gdc.influence import ghost
    from gdc.influence import grads as grads_lib

    def model_loss(g, params, batch):
        return models.per_example_loss(g, params, batch)[0]

    def loss_fn(t, batch):
        return models.per_example_loss(graphdef, unravel(t), batch)[0]

    def plain(t, batch):
        return jax.grad(lambda t: loss_fn(t, batch).mean())(t)

    def example_grads(t, batch):
        return jax.vmap(lambda ex: grads_lib.example_grad(loss_fn, t, ex))(batch)

    def norms_vmap(t, batch):
        return jnp.sum(example_grads(t, batch) ** 2, axis=1)

    def clipped(t, batch):
        g_BxP = example_grads(t, batch)
        (sum_P,), _ = optax.per_example_global_norm_clip([g_BxP], 1.0)  # its 2nd output counts clipped entries
        return sum_P, jnp.sqrt(jnp.sum(g_BxP**2, axis=1))  # the norms, as jax_privacy's return_grad_norms

    def chunked(size):
        return lambda t, batch: grads_lib.grad_sq_norms(loss_fn, t, batch, batch_size=size)

    def ghost_norms(t, batch):
        return ghost.ghost_sq_norms(model_loss, graphdef, unravel(t), batch)

    def ghost_clipped(two_pass):
        def fn(t, batch):
            params = unravel(t)
            sum_tree, norms_B = ghost.ghost_clipped_grad(model_loss, graphdef, params, batch, 1.0, two_pass=two_pass)
            return grads_lib.flatten(sum_tree)[0], norms_B

        return fn

    def dp_clipped(microbatch_size):
        g = dp_clipping.clipped_grad(
            lambda t, batch: loss_fn(t, batch).sum(),  # the batch argument holds one example (keep_batch_dim)
            l2_clip_norm=1.0,
            batch_argnums=1,
            return_grad_norms=True,
            microbatch_size=microbatch_size,
        )

        def fn(t, batch):
            sum_P, aux = g(t, batch)
            return sum_P, aux.grad_norms

        return fn

    acc = optax.microbatching.AccumulationType
    return {
        "plain batch gradient": jax.jit(plain),
        "norms, gdc chunked (chunk = B)": jax.jit(chunked(b)),
        f"norms, gdc chunked (chunk = {micro})": jax.jit(chunked(micro)),
        "norms, one vmap": jax.jit(norms_vmap),
        "clipped sum, one vmap (optax clip)": jax.jit(clipped),
        f"clipped sum, optax.microbatch ({micro})": jax.jit(
            optax.microbatch(clipped, argnums=1, microbatch_size=micro, accumulator=(acc.SUM, acc.CONCAT))
        ),
        "clipped sum, jax_privacy clipped_grad": jax.jit(dp_clipped(None)),
        f"clipped sum, jax_privacy clipped_grad ({micro})": jax.jit(dp_clipped(micro)),
        "norms, ghost (gdc.influence.ghost)": jax.jit(ghost_norms),
        "clipped sum, ghost (book-keeping)": jax.jit(ghost_clipped(False)),
        "clipped sum, ghost + 2nd backward": jax.jit(ghost_clipped(True)),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="mlp,transformer")
    p.add_argument("--blocks", type=int, default=5)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--micro", type=int, default=16)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "per_example_grads.json"))
    args = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from gdc import models
    from gdc.influence import grads as grads_lib

    results = {"jax": jax.__version__, "device": jax.devices()[0].device_kind, "models": {}}
    for name in args.models.split(","):
        b, seq_len = (256, 0) if name == "mlp" else (32, 64)
        cfg = models.ModelConfig(name=name, width=128, depth=2, num_heads=4)
        graphdef, params = models.build(cfg, seed=0, seq_len=seq_len, num_features=32, num_classes=10)
        rng = np.random.default_rng(0)
        if name == "mlp":
            batch = {"x": rng.normal(size=(b, 32)).astype(np.float32), "y": rng.integers(0, 10, b).astype(np.int32)}
        else:
            batch = {
                "tokens": rng.integers(0, 256, (b, seq_len + 1)).astype(np.int32),
                "token_mask": np.ones((b, seq_len), bool),
            }
        batch = jax.tree.map(jnp.asarray, batch)
        theta_P, unravel = grads_lib.flatten(params)

        variants = make_variants(graphdef, unravel, b, args.micro)
        # The reductions agree with each other (a benchmark of wrong numbers would be worthless).
        n_chunk = variants["norms, gdc chunked (chunk = B)"](theta_P, batch)
        n_vmap = variants["norms, one vmap"](theta_P, batch)
        s1, norms1 = variants["clipped sum, one vmap (optax clip)"](theta_P, batch)
        s2, norms2 = variants[f"clipped sum, optax.microbatch ({args.micro})"](theta_P, batch)
        np.testing.assert_allclose(n_chunk, n_vmap, rtol=1e-4)
        np.testing.assert_allclose(norms1**2, n_vmap, rtol=1e-4)
        np.testing.assert_allclose(s1, s2, rtol=1e-3, atol=1e-5)
        np.testing.assert_allclose(norms1, norms2, rtol=1e-4)
        np.testing.assert_allclose(variants["norms, ghost (gdc.influence.ghost)"](theta_P, batch), n_vmap, rtol=1e-4)
        for k in (
            "clipped sum, jax_privacy clipped_grad",
            f"clipped sum, jax_privacy clipped_grad ({args.micro})",
            "clipped sum, ghost (book-keeping)",
            "clipped sum, ghost + 2nd backward",
        ):
            s3, norms3 = variants[k](theta_P, batch)
            np.testing.assert_allclose(norms3, norms1, rtol=1e-4)
            np.testing.assert_allclose(s3, s1, rtol=1e-3, atol=1e-5)

        times = {k: [] for k in variants}
        for block in range(args.blocks + 1):
            for k, fn in variants.items():
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    jax.block_until_ready(fn(theta_P, batch))
                if block:
                    times[k].append((time.perf_counter() - t0) / args.steps)
        base = statistics.median(times["plain batch gradient"])
        rows = {}
        print(f"{name}: B = {b}, P = {theta_P.size}")
        for k, ts in times.items():
            t = statistics.median(ts)
            rows[k] = {"ms_per_batch": t * 1e3, "examples_per_s": b / t, "ratio_vs_plain": base / t}
            print(f"  {k:<42} {t * 1e3:9.2f} ms  {b / t:10.0f} ex/s  ratio {base / t:5.2f}x")
        results["models"][name] = {"batch": b, "params": int(theta_P.size), "variants": rows}
    results["jax_privacy"] = importlib.metadata.version("jax-privacy")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
