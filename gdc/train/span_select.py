"""``tracker.spans='top_k_drop'``: spans for unmarked text, the ``span_k`` tokens of each sequence whose loss dropped
most during a warm-up, chosen once and then fixed.

At the end of epoch 0 the loop saves every training token's loss at the current params
(``trackers/token_loss_epoch_0000.npy``, ``[N, L]``, NaN on padding targets); at the end of epoch W =
``tracker.span_warmup`` it saves them again, takes each token's drop (epoch 0 minus epoch W) and marks the ``span_k``
largest drops of each sequence as spans 1..k in position order (``top_k_drop``), written to
``trackers/span_ids.npy`` (int8 ``[N, L]``). Until then the rows carry no span, so the span tracker records nothing in
epochs 0..W and tracks the chosen tokens from epoch W + 1 on; its span mask never changes after. A run resumed after
epoch W reads ``span_ids.npy`` back (``restore``).
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from gdc import losses, models, sharding
from gdc.data.pipeline import sequential_batches
from gdc.errors import StageInputError
from gdc.train.setup import Run, processes

SPAN_IDS = "span_ids.npy"


def token_loss_name(epoch: int) -> str:
    return f"token_loss_epoch_{epoch:04d}.npy"


def top_k_drop(first_NxL: np.ndarray, later_NxL: np.ndarray, k: int) -> np.ndarray:
    """Span ids ``[N, L]`` int8: in each row the k tokens with the largest ``first - later`` (ties: the earlier
    position), numbered 1..k in position order; tokens where either loss is NaN are never chosen (a row with fewer
    than k such tokens marks all of them); 0 elsewhere."""
    drop_NxL = np.asarray(first_NxL, np.float64) - np.asarray(later_NxL, np.float64)
    n, length = drop_NxL.shape
    key_NxL = np.where(np.isnan(drop_NxL), -np.inf, drop_NxL)
    order_NxL = np.argsort(-key_NxL, axis=1, kind="stable")[:, :k]  # stable: ties keep position order
    rows_Nxk = np.arange(n)[:, None]
    chosen_NxL = np.zeros((n, length), bool)
    chosen_NxL[rows_Nxk, order_NxL] = np.isfinite(key_NxL[rows_Nxk, order_NxL])
    return (np.cumsum(chosen_NxL, axis=1) * chosen_NxL).astype(np.int8)


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _token_nll(params, tokens_BxL1, token_mask_BxL, *, graphdef):
    logits = models.forward(graphdef, params, {"tokens": tokens_BxL1, "token_mask": token_mask_BxL})
    return jnp.where(token_mask_BxL, losses.token_nll(logits, tokens_BxL1[:, 1:]), jnp.nan)


def token_losses(run: Run, params) -> np.ndarray:
    """Every training token's loss at ``params`` (no dropout), ``[N, L]`` f32, NaN on padding targets."""
    mask_NxL = run.train_arrays["token_mask"]
    out = np.full(mask_NxL.shape, np.nan, np.float32)
    for batch in sequential_batches(run.train_arrays, run.cfg.train.batch_size, **processes()):
        placed = sharding.put_batch({k: batch[k] for k in ("tokens", "token_mask")}, run.mesh)
        nll = _token_nll(params, placed["tokens"], placed["token_mask"], graphdef=run.graphdef)
        nll = np.asarray(jax.device_get(nll))
        ok = batch["mask"]
        out[batch["index"][ok]] = nll[ok]
    return out


def install(run: Run, feed, span_NxL: np.ndarray) -> None:
    """Writes the chosen span ids into the run's rows (the host batches read them) and, on the resident path, places
    them again."""
    run.train_arrays["span"][...] = span_NxL
    if hasattr(feed, "table"):
        feed.table = {**feed.table, "span": sharding.put_tree(run.train_arrays["span"], run.engine.state_sharding)}


def at_epoch_end(run: Run, feed, params, epoch: int, workdir: str, is_writer: bool) -> None:
    """Epoch 0: saves the token losses. Epoch ``span_warmup``: saves them, chooses, saves and installs the spans."""
    w = run.cfg.tracker.span_warmup
    if epoch not in (0, w):
        return
    folder = os.path.join(workdir, "trackers")
    loss_NxL = token_losses(run, params)
    if is_writer:
        np.save(os.path.join(folder, token_loss_name(epoch)), loss_NxL)
    if epoch == w:
        first_NxL = np.load(os.path.join(folder, token_loss_name(0)))
        span_NxL = top_k_drop(first_NxL, loss_NxL, run.cfg.tracker.span_k)
        if is_writer:
            np.save(os.path.join(folder, SPAN_IDS), span_NxL)
        install(run, feed, span_NxL)


def restore(run: Run, workdir: str, step: int) -> None:
    """Before the feed opens: a run resumed after epoch ``span_warmup`` reads its chosen spans back."""
    if step < (run.cfg.tracker.span_warmup + 1) * run.steps_per_epoch:
        return
    path = os.path.join(workdir, "trackers", SPAN_IDS)
    if not os.path.exists(path):
        raise StageInputError(
            f"missing input: {path} (tracker.spans='top_k_drop' chose its tokens after epoch "
            f"{run.cfg.tracker.span_warmup}, and this run resumes after it); retrain the run in a new workdir."
        )
    run.train_arrays["span"][...] = np.load(path)
