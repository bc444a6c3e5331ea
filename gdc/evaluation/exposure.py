"""Exposure of canary secrets (Carlini et al. 2019), exact over the whole secret space.

exposure = log2 |R| - log2 rank, with R all 10^d digit strings (leading zeros allowed) and the rank taken by
the log-likelihood of the secret's d digits given the canary's decoding context (``canaries.decode_contexts``: the
bare prefix for ``row_start``; the first copy's preceding bytes and prefix for ``random_offset``):
``sum_j log p(digit_j | context, digits_<j)`` under the full byte softmax. Choices:
  * The closing "." is not scored: it follows every candidate alike, and scoring it would cost 10x the
    evaluations (a d+1-th tree level).
  * rank = 1 + #{secrets with strictly higher log-likelihood}: exact ties go in the secret's favour (rank 1
    means exposure = the ceiling log2 10^d). The number of tied secrets is reported.
  * NLLs are in nats.

Exact enumeration walks the digit tree: the log-likelihood of a secret is the sum over its digits of
``log p(digit | prefix + earlier digits)``, so level k of the tree (10^k nodes) needs one next-digit
distribution per node. Two exact implementations:
  * "forward" (any causal model, via ``models.forward``): one forward pass of prefix + the d-1 digits of each
    level-(d-1) node returns, at successive positions, the next-digit distributions of all its ancestors too,
    so 10^(d-1) passes of length |prefix| + d - 1 cover the tree. Rows are built on device from (canary, node)
    ids in fixed-size batches (the last one padded). The reference.
  * "incremental" (every model with ``gdc.models.decode``'s API: LSTM, GRU, transformer; "auto" picks it for
    them, "recurrent" is its former name): one prefill of the prefix, then ``models.branch_step`` carries the
    model's decode carry down the tree level by level, one token step per node (sum_k 10^k ~ 1.1e5 for d = 6)
    instead of one pass over the whole prefix per node. The transformer's carry shares the prefix's KV cache
    across all nodes and stores one token's K/V per node and layer; the last level runs one digit at a time.
    Peak memory at d = 6, width 128 (XLA's estimate): ~0.25 GB for the 2-layer transformer, ~0.07 GB for the
    LSTM. One jitted call per canary. Tests hold it equal to "forward" and to brute force.

Cost per canary at d = 6 on 2 CPU cores (width-128 models; benchmarks/exposure_cost.py, numbers in
benchmarks/README.md): "incremental" ~0.3-0.4 s for the 1-layer LSTM and GRU and ~2 s for the 2-layer
transformer (plus one compilation, ~1.5 and ~5.5 s); "forward" ~25-30 s for the LSTM and GRU and ~2-4 min for the
transformer (10^5 passes of 33 tokens): 70-110x slower.

For spaces too large to enumerate, the skew-normal approximation (Carlini et al. §4.3): fit a skew-normal to
the NLLs of random secrets; rank/|R| is the fraction of secrets at most as unlikely as the true one, so
exposure ~ -log2 CDF(NLL of the true secret). Low NLL (a memorized secret) gives a small CDF and a high
exposure. It is only as good as the fitted tail: against exact enumeration (d = 6, a 10^4-secret sample,
random LSTMs) it was within 0.5 bits where the sample has mass (CDF >= 1e-2) but off by 1-9 bits at
ranks <= 1000 of 10^6, i.e. exactly where memorized secrets sit. Prefer the exact value whenever the space can
be enumerated.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import stats

from gdc import models, sharding
from gdc.evaluation import canaries
from gdc.evaluation.common import EvalContext, canary_meta, place_params
from gdc.evaluation.extraction import (
    DECODE_METHODS,
    ablation_args,
    check_input_len,
    decode_method,
    forward_logits,
    pad_rows,
    with_layer,
)
from gdc.models.char_lm import Ablation

DIGIT0 = int(canaries.DIGIT_TOKENS[0])
METHODS = DECODE_METHODS  # "auto", "incremental", "forward" and "recurrent" (incremental's former name)


def ceiling(num_digits: int) -> float:
    """The largest exposure, log2 10^d (rank 1)."""
    return num_digits * float(np.log2(10.0))


# ------------------------------------------------------------------------------------------------------------
# "forward": any causal model.
# ------------------------------------------------------------------------------------------------------------
@functools.cache
def _node_fn(graphdef: nnx.GraphDef, num_digits: int, mesh: jax.sharding.Mesh, layer: int | None) -> Callable:
    rows_sharding = sharding.batch_sharding(mesh)
    j = num_digits - 1  # digits fed per row; the last one is read off the final distribution

    def score(params, buf_CxT, len_C, c_B, s_B, direction):
        b = c_B.shape[0]
        rows_B = jnp.arange(b)
        tokens_BxT = buf_CxT[c_B]
        len_B = len_C[c_B]
        pows_J = 10 ** jnp.arange(j - 1, -1, -1, dtype=jnp.int32)
        digits_BxJ = (s_B[:, None] // pows_J[None, :]) % 10
        cols_BxJ = len_B[:, None] + jnp.arange(j)[None, :]
        tokens_BxT = tokens_BxT.at[rows_B[:, None], cols_BxJ].set(DIGIT0 + digits_BxJ)
        tokens_BxT = jax.lax.with_sharding_constraint(tokens_BxT, rows_sharding)
        logits_BxLxV = forward_logits(graphdef, params, tokens_BxT, with_layer(layer, direction))
        pos_BxJ = len_B[:, None] - 1 + jnp.arange(num_digits)[None, :]
        logp_BxJxV = jax.nn.log_softmax(logits_BxLxV[rows_B[:, None], pos_BxJ], axis=-1)
        logp_BxJx10 = logp_BxJxV[:, :, DIGIT0 : DIGIT0 + 10]
        fed_BxJ = jnp.take_along_axis(logp_BxJx10[:, :j], digits_BxJ[:, :, None], axis=-1)[:, :, 0]
        return fed_BxJ.sum(axis=1)[:, None] + logp_BxJx10[:, j]

    return jax.jit(score, out_shardings=rows_sharding)


def node_log_likelihoods(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prefixes: Sequence[canaries.Prefix],
    num_digits: int,
    canary_Br: np.ndarray,
    node_Br: np.ndarray,
    mesh: jax.sharding.Mesh,
    batch_size: int = 2048,
    *,
    ablate: Ablation = None,
) -> np.ndarray:
    """Log-likelihoods of the 10 secrets ``node * 10 + last`` of canary ``canary_Br[r]``, for each row r.

    Args:
        graphdef, params: a causal byte LM.
        prefixes: the C canary prefixes (str, raw bytes or 1-D token arrays).
        num_digits: d; ``node_Br`` are (d-1)-digit values (all 0 when d = 1).
        canary_Br, node_Br: int row specs.
        mesh: rows are split over it.
        batch_size: rows per jitted call (rounded to the mesh; the last call is padded).
        ablate: optional ``(layer, u_D, alpha)`` direction ablation (``gdc.models.char_lm.ablate_direction``).

    Returns:
        f32 [Br, 10].
    """
    buf_CxT, len_C = canaries.prefix_buffer(prefixes, num_digits)
    check_input_len(graphdef, params, buf_CxT.shape[1] - 1, f"scoring {num_digits}-digit secrets")
    r = len(canary_Br)
    b = pad_rows(min(batch_size, r), mesh)
    layer, direction = ablation_args(ablate)
    fn = _node_fn(graphdef, num_digits, mesh, layer)
    params = place_params(params, mesh)
    repl = sharding.replicated(mesh)
    buf, lens = jax.device_put(buf_CxT, repl), jax.device_put(len_C, repl)
    parts = []
    with jax.set_mesh(mesh):
        for start in range(0, r, b):
            c_B = np.zeros(b, np.int32)
            s_B = np.zeros(b, np.int32)
            c_B[: min(b, r - start)] = canary_Br[start : start + b]
            s_B[: min(b, r - start)] = node_Br[start : start + b]
            rows = sharding.put_batch({"c": c_B, "s": s_B}, mesh)
            parts.append(fn(params, buf, lens, rows["c"], rows["s"], direction))
    return np.concatenate(jax.device_get(parts))[:r]


# ------------------------------------------------------------------------------------------------------------
# "incremental": the model's decode carry walked down the digit tree.
# ------------------------------------------------------------------------------------------------------------
@functools.cache
def _tree_fn(graphdef: nnx.GraphDef, num_digits: int, mesh: jax.sharding.Mesh, layer: int | None) -> Callable:
    num_devices = mesh.devices.size
    rows_sharding = sharding.batch_sharding(mesh)
    digits_10 = jnp.asarray(canaries.DIGIT_TOKENS)

    def digit_logp(logits_NtxV):
        return jax.nn.log_softmax(logits_NtxV, axis=-1)[:, DIGIT0 : DIGIT0 + 10]

    def tree(params, prefix_T, prefix_len, direction):
        ablate = with_layer(layer, direction)
        t = prefix_T.shape[0]
        carry, logits_1xV = models.prefill(graphdef, params, prefix_T[None], prefix_len[None], t, ablate=ablate)
        ll_Nt = digit_logp(logits_1xV).reshape(10)
        for k in range(1, num_digits):
            n = 10**k

            def rows(x, n=n):
                if x.shape[0] == n and n % num_devices == 0:
                    return jax.lax.with_sharding_constraint(x, rows_sharding)
                return x

            # Node r of level k is node r // 10 of level k-1 followed by digit r % 10. The leaves of the new
            # level (every recurrent state; the transformer's newest K/V) are split over the mesh.
            if k < num_digits - 1:
                carry, logits_NtxV = models.branch_step(graphdef, params, carry, digits_10, ablate=ablate)
                carry = jax.tree.map(rows, carry)
                logp_Ntx10 = digit_logp(rows(logits_NtxV))
            else:
                # The last and largest level, whose carry is not needed: one digit at a time (lax.map), so its
                # activations are a tenth of the level's (XLA's temp estimate at d = 6, width 128: transformer
                # 1.5 GB -> 0.25 GB, LSTM 0.4 -> 0.07 GB; also faster on CPU).
                def one_digit(digit, carry=carry, n=n):
                    _, logits_NaxV = models.branch_step(graphdef, params, carry, digit[None], ablate=ablate)
                    return digit_logp(rows(logits_NaxV, n // 10))

                logp_Ntx10 = jnp.swapaxes(jax.lax.map(one_digit, digits_10), 0, 1).reshape(n, 10)
            ll_Nt = (ll_Nt.reshape(n, 1) + logp_Ntx10).reshape(10 * n)
        return ll_Nt

    return jax.jit(tree)


def _incremental_log_likelihoods(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prefixes: Sequence[canaries.Prefix],
    num_digits: int,
    mesh: jax.sharding.Mesh,
    ablate: Ablation,
) -> np.ndarray:
    buf_CxT, len_C = canaries.prefix_buffer(prefixes, 0)
    check_input_len(graphdef, params, buf_CxT.shape[1] + num_digits - 1, f"scoring {num_digits}-digit secrets")
    layer, direction = ablation_args(ablate)
    fn = _tree_fn(graphdef, num_digits, mesh, layer)
    params = place_params(params, mesh)
    repl = sharding.replicated(mesh)
    with jax.set_mesh(mesh):
        parts = [
            fn(params, jax.device_put(buf_CxT[c], repl), jax.device_put(len_C[c], repl), direction)
            for c in range(len(prefixes))
        ]
    return np.stack(jax.device_get(parts))


# ------------------------------------------------------------------------------------------------------------
# Exposure.
# ------------------------------------------------------------------------------------------------------------
def all_secret_log_likelihoods(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prefixes: Sequence[canaries.Prefix],
    num_digits: int,
    mesh: jax.sharding.Mesh,
    *,
    method: str = "auto",
    batch_size: int = 2048,
    ablate: Ablation = None,
) -> np.ndarray:
    """Exact log-likelihood (nats) of every d-digit secret after each prefix.

    Args:
        prefixes: C prompts: str, raw bytes or 1-D int token arrays.
        method: one of ``METHODS`` (see the module docstring); ``batch_size`` is the rows per call of "forward".
        ablate: optional ``(layer, u_D, alpha)``: that layer's hidden state has the direction projected out at
            every position, as in greedy decoding (``extraction.greedy_decode``).

    Returns:
        f32 [C, 10^d]; column v is the secret ``f"{v:0{d}d}"``.
    """
    if decode_method(graphdef, params, method) == "incremental":
        return _incremental_log_likelihoods(graphdef, params, prefixes, num_digits, mesh, ablate)
    m = 10 ** (num_digits - 1)
    canary_Br, node_Br = np.divmod(np.arange(len(prefixes) * m), m)
    ll = node_log_likelihoods(
        graphdef, params, prefixes, num_digits, canary_Br, node_Br, mesh, batch_size, ablate=ablate
    )
    return ll.reshape(len(prefixes), 10 * m)


def rank_exposure(ll_Cs: np.ndarray, secret: int) -> dict[str, float]:
    """Exact rank and exposure of secret index ``secret`` among all log-likelihoods ``ll_Cs`` of the space."""
    true = ll_Cs[secret]
    if not np.isfinite(ll_Cs).all():  # a diverged model: NaN compares False and would rank first
        nan = float("nan")
        return {"rank": nan, "ties": nan, "exposure": nan, "secret_nll": float(-true)}
    rank = 1 + int((ll_Cs > true).sum())
    return {
        "rank": float(rank),
        "ties": float((ll_Cs == true).sum() - 1),
        "exposure": float(np.log2(len(ll_Cs)) - np.log2(rank)),
        "secret_nll": float(-true),
    }


def skewnorm_exposure(nll_true: float, nll_sample: np.ndarray) -> float:
    """Exposure ~ -log2 CDF(nll_true) under a skew-normal fitted (MLE) to the NLLs of random secrets."""
    a, loc, scale = stats.skewnorm.fit(np.asarray(nll_sample, np.float64))
    return float(-stats.skewnorm.logcdf(nll_true, a, loc, scale) / np.log(2.0))


def evaluate(
    ctx: EvalContext,
    *,
    max_exact_digits: int = 6,
    skewnorm_sample: int = 10_000,
    method: str = "auto",
    batch_size: int = 2048,
    groups: Sequence[str] = canaries.GROUPS,
) -> dict[str, float | np.ndarray]:
    """Exposure of every inserted and control canary (``groups``), given the context its copies were trained in
    (the bare prefix for ``row_start``; for ``random_offset`` the first copy's preceding bytes and prefix).

    Exact when ``secret_digits <= max_exact_digits``; then the skew-normal estimate is also reported, fitted
    to the NLLs of ``skewnorm_sample`` secrets drawn without replacement from the enumerated space (seed
    ``[ctx.seed, 4]``). Otherwise only the skew-normal estimate (from that many secrets scored by forward
    passes), and the rank and ties are NaN.

    Returns:
        ``exposure_ceiling`` and per group ("inserted", "controls"): ``{group}_exposure_mean`` and arrays [C]
        ``{group}_exposure``, ``{group}_rank``, ``{group}_rank_ties``, ``{group}_secret_nll`` (nats),
        ``{group}_exposure_skewnorm``.
    """
    meta = canary_meta(ctx)
    d = meta["secret_digits"]
    size = 10**d
    rng = np.random.default_rng([ctx.seed, 4])
    out: dict[str, float | np.ndarray] = {"exposure_ceiling": ceiling(d)}
    for group in groups:
        records = meta[group]
        if not records:
            continue
        ctxs = canaries.decode_contexts(ctx.dataset, group, ctx.seed)
        # One context per canary: with per-copy contexts (random_offset), the first copy's (lowest row id).
        first_C = np.array([int(np.flatnonzero(ctxs["canary"] == c)[0]) for c in range(len(records))])
        prefixes = [ctxs["contexts"][x] for x in first_C]
        secret_C = np.array([int(r["secret"]) for r in records])
        sample = min(size, skewnorm_sample)
        if d <= max_exact_digits:
            ll_CxCs = all_secret_log_likelihoods(
                ctx.graphdef, ctx.params, prefixes, d, ctx.mesh, method=method, batch_size=batch_size
            )
            res = [rank_exposure(ll_Cs, s) for ll_Cs, s in zip(ll_CxCs, secret_C, strict=True)]
            nll_sample_CxCs = -np.stack([ll_Cs[rng.choice(size, sample, replace=False)] for ll_Cs in ll_CxCs])
        else:
            secrets_CxCs = rng.integers(0, size, size=(len(records), sample))
            all_CxCs = np.concatenate([secret_C[:, None], secrets_CxCs], axis=1)
            canary_Br = np.repeat(np.arange(len(records)), sample + 1)
            ll_Brx10 = node_log_likelihoods(
                ctx.graphdef,
                ctx.params,
                prefixes,
                d,
                canary_Br,
                all_CxCs.reshape(-1) // 10,
                ctx.mesh,
                batch_size,
            )
            ll_CxCs = ll_Brx10[np.arange(len(canary_Br)), all_CxCs.reshape(-1) % 10].reshape(all_CxCs.shape)
            nan = float("nan")
            res = [{"rank": nan, "ties": nan, "exposure": nan, "secret_nll": -float(ll[0])} for ll in ll_CxCs]
            nll_sample_CxCs = -ll_CxCs[:, 1:]
        skew_C = np.array([skewnorm_exposure(r["secret_nll"], s) for r, s in zip(res, nll_sample_CxCs, strict=True)])
        exposure_C = np.array([r["exposure"] for r in res]) if d <= max_exact_digits else skew_C
        out[f"{group}_exposure"] = exposure_C
        out[f"{group}_exposure_mean"] = float(exposure_C.mean())
        out[f"{group}_rank"] = np.array([r["rank"] for r in res])
        out[f"{group}_rank_ties"] = np.array([r["ties"] for r in res])
        out[f"{group}_secret_nll"] = np.array([r["secret_nll"] for r in res])
        out[f"{group}_exposure_skewnorm"] = skew_C
    return out
