"""MemHunter's prompt inducer: a small character LM trained by rejection sampling to write prompts that make a
target model emit training text.

The inducer is one of gdc's character LMs (``gdc.models``, a GRU by default) over bytes. It reads a start byte
``BOS = 0`` (never in the text, and never sampled) and writes a prompt of ``prompt_len`` bytes. It starts from a
model pre-trained on public text (``pretrain``: windows of never-trained rows), the stand-in for the pre-trained
small LLM MemHunter starts from. ``rejection_sampling`` then repeats, for ``rounds`` rounds:

1. sample ``per_round`` prompts at ``temperature`` (round r uses key ``fold_in(key, r)``);
2. the target continues every prompt (``target_fn``: prompts -> continuations) and ``reward_fn`` scores each
   continuation (in the study: the longest substring it shares with training rows the auditor knows);
3. prompts whose reward reaches ``threshold`` are accepted, and the inducer is fine-tuned on every prompt accepted
   so far (Adam on the engine's per-example NLL, ``fit_steps`` steps from the current weights).

With ``fine_tune=False`` the same loop samples every round from the pre-trained weights with the same keys: the
control inducer at a matched query budget. MemHunter's readability term is left out: for a character model the
pre-training on public text is the only fluency prior there is.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from gdc import models

BOS = 0


@dataclasses.dataclass(frozen=True)
class InducerSettings:
    prompt_len: int = 16
    width: int = 64
    depth: int = 1
    rounds: int = 4
    per_round: int = 256
    threshold: float = 12.0
    temperature: float = 1.0
    fit_steps: int = 60
    pretrain_steps: int = 300
    batch_size: int = 64
    learning_rate: float = 3e-3


def build(settings: InducerSettings, seed: int) -> tuple[nnx.GraphDef, nnx.State]:
    cfg = models.ModelConfig(name="gru", width=settings.width, depth=settings.depth)
    return models.build(cfg, seed=seed, vocab_size=256)


def with_bos(prompts_NxP: np.ndarray) -> np.ndarray:
    """``[BOS] + prompt`` rows, int32 [N, P + 1]: the inducer's training sequences."""
    prompts_NxP = np.asarray(prompts_NxP, np.int32)
    return np.concatenate([np.full((len(prompts_NxP), 1), BOS, np.int32), prompts_NxP], axis=1)


def windows(rows_NxT: np.ndarray, length: int) -> np.ndarray:
    """Every window of ``length`` bytes of every row: int32 [N * (T - length + 1), length]."""
    rows_NxT = np.asarray(rows_NxT, np.int32)
    starts = range(rows_NxT.shape[1] - length + 1)
    return np.concatenate([rows_NxT[:, s : s + length] for s in starts])


@functools.cache
def _step_fn(graphdef: nnx.GraphDef, learning_rate: float) -> tuple[optax.GradientTransformation, Callable]:
    tx = optax.adam(learning_rate)

    def step(params, opt_state, tokens_BxT):
        def loss_fn(p):
            batch = {"tokens": tokens_BxT, "token_mask": jnp.ones((tokens_BxT.shape[0], tokens_BxT.shape[1] - 1), bool)}
            loss_B, _ = models.per_example_loss(graphdef, p, batch)
            return loss_B.mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return tx, jax.jit(step)


def fit(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    rows_NxT: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> tuple[nnx.State, list[float]]:
    """``steps`` Adam steps (fresh optimizer state) on batches drawn uniformly with replacement from ``rows_NxT``.

    Returns:
        (params, the loss of every step).
    """
    tx, step = _step_fn(graphdef, learning_rate)
    opt_state = tx.init(params)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        batch = jnp.asarray(rows_NxT[rng.integers(0, len(rows_NxT), batch_size)])
        params, opt_state, loss = step(params, opt_state, batch)
        losses.append(loss)
    return params, [float(x) for x in jax.device_get(losses)]


@functools.cache
def _sample_fn(graphdef: nnx.GraphDef, num: int, length: int) -> Callable:
    def run(params, key, temperature):
        carry = models.decode_init(graphdef, params, num, length + 1)
        carry, logits_NxV = models.decode_step(graphdef, params, carry, jnp.full((num,), BOS, jnp.int32))

        def body(state, k):
            carry, logits_NxV = state
            logits_NxV = logits_NxV.at[:, BOS].set(-jnp.inf)  # BOS is a start marker, never text
            next_N = jax.random.categorical(k, logits_NxV / temperature, axis=-1).astype(jnp.int32)
            return models.decode_step(graphdef, params, carry, next_N), next_N

        _, out_PxN = jax.lax.scan(body, (carry, logits_NxV), jax.random.split(key, length))
        return out_PxN.T

    return jax.jit(run)


def sample(
    graphdef: nnx.GraphDef, params: nnx.State, num: int, length: int, key: jax.Array, temperature: float = 1.0
) -> np.ndarray:
    """``num`` prompts of ``length`` bytes sampled from the inducer after BOS: int32 [num, length]."""
    return np.asarray(_sample_fn(graphdef, num, length)(params, key, jnp.float32(temperature)))


def pretrain(
    graphdef: nnx.GraphDef, params: nnx.State, public_NxT: np.ndarray, settings: InducerSettings, seed: int
) -> tuple[nnx.State, list[float]]:
    """The inducer's starting point: ``pretrain_steps`` steps on every ``prompt_len`` window of public rows."""
    rows = with_bos(windows(public_NxT, settings.prompt_len))
    kw = dict(batch_size=settings.batch_size, learning_rate=settings.learning_rate, seed=seed)
    return fit(graphdef, params, rows, steps=settings.pretrain_steps, **kw)


def rejection_sampling(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    *,
    target_fn: Callable[[np.ndarray], np.ndarray],
    reward_fn: Callable[[np.ndarray], np.ndarray],
    settings: InducerSettings,
    seed: int,
    fine_tune: bool = True,
) -> dict:
    """Rejection-sampling rounds (module docstring); ``fine_tune=False`` is the control inducer.

    Returns:
        ``params`` (the final inducer), ``history`` (per round: ``accept_rate``, ``reward_mean``, ``reward_max``,
        ``accepted_total``), ``accepted`` (int32 [A, prompt_len], every accepted prompt) and ``best``
        (the highest-reward prompt, its continuation and reward).
    """
    key = jax.random.key(seed)
    accepted = np.zeros((0, settings.prompt_len), np.int32)
    history, best = [], {"reward": -np.inf}
    for r in range(settings.rounds):
        prompts_NxP = sample(
            graphdef, params, settings.per_round, settings.prompt_len, jax.random.fold_in(key, r), settings.temperature
        )
        conts_NxC = np.asarray(target_fn(prompts_NxP))
        reward_N = np.asarray(reward_fn(conts_NxC), np.float64)
        ok_N = reward_N >= settings.threshold
        accepted = np.concatenate([accepted, prompts_NxP[ok_N]])
        i = int(np.argmax(reward_N))
        if reward_N[i] > best["reward"]:
            best = {"reward": float(reward_N[i]), "prompt": prompts_NxP[i], "continuation": conts_NxC[i]}
        history.append(
            {
                "round": r,
                "accept_rate": float(ok_N.mean()),
                "reward_mean": float(reward_N.mean()),
                "reward_max": float(reward_N.max()),
                "accepted_total": int(len(accepted)),
            }
        )
        if fine_tune and len(accepted) and r < settings.rounds - 1:
            params, _ = fit(
                graphdef,
                params,
                with_bos(accepted),
                steps=settings.fit_steps,
                batch_size=settings.batch_size,
                learning_rate=settings.learning_rate,
                seed=seed + 1000 * (r + 1),
            )
    return {"params": params, "history": history, "accepted": accepted, "best": best}
