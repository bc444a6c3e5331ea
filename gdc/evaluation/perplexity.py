"""Validation perplexity, two ways, and bits per character.

* ``perplexity`` = exp(mean over examples of each example's mean token NLL): every example counts equally,
  which matches the per-example loss the tracker and the scores use (paper §10 item 1).
* ``perplexity_token`` = exp(total NLL / total valid tokens): the usual corpus-level perplexity. The two agree
  when every example has the same number of valid tokens (true for the chunked LM sources).
* ``bits_per_char`` = total NLL / total tokens / ln 2. Tokens are utf-8 bytes, so this is bits per byte; it
  equals bits per character on ASCII text such as the pydoc corpus.

Examples without a valid token are left out of the per-example mean. All NLLs are in nats.
"""

import numpy as np

from gdc.evaluation.common import EvalContext, per_example_stats


def summarize(loss_N: np.ndarray, tokens_N: np.ndarray, prefix: str = "heldout") -> dict[str, float]:
    """Perplexities from per-example mean NLLs ``loss_N`` (nats) and valid-token counts ``tokens_N``."""
    loss_N = np.asarray(loss_N, np.float64)
    tokens_N = np.asarray(tokens_N, np.float64)
    valid_N = tokens_N > 0
    mean_loss = float(loss_N[valid_N].mean()) if valid_N.any() else float("nan")
    token_loss = float((loss_N * tokens_N).sum() / max(tokens_N.sum(), 1.0))
    return {
        f"{prefix}_loss": mean_loss,
        f"{prefix}_perplexity": float(np.exp(mean_loss)),
        f"{prefix}_token_loss": token_loss,
        f"{prefix}_perplexity_token": float(np.exp(token_loss)),
        f"{prefix}_bits_per_char": float(token_loss / np.log(2.0)),
    }


def evaluate(ctx: EvalContext, split: str = "heldout") -> dict[str, float]:
    """Perplexity of ``split`` ("heldout" or "train"); classification datasets get loss and accuracy only."""
    arrays = ctx.dataset.heldout if split == "heldout" else ctx.dataset.train
    stats = per_example_stats(ctx, arrays)
    accuracy = float(stats["accuracy"].mean())
    if "tokens" not in arrays:
        return {f"{split}_loss": float(stats["loss"].mean()), f"{split}_accuracy": accuracy}
    return {**summarize(stats["loss"], stats["tokens"], split), f"{split}_accuracy": accuracy}
