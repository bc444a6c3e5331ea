"""Membership inference on R models trained on random halves of one pool: the loss attack and online LiRA.

LiRA (Carlini et al. 2022), online, fixed variance: each model in turn is the target and the other R - 1 are its
shadows. For example i, phi = log p_y - log(1 - p_y) (the logit-scaled confidence, computed from logits as
z_y - logsumexp_{k != y} z_k), mu_in(i) / mu_out(i) = mean phi over the shadows that did / did not train on i, and
sigma_in / sigma_out = the std of (phi - mu) over all (shadow, example) pairs of that side (the fixed-variance variant
the paper recommends for few shadows). Score = log N(phi_t; mu_in, sigma_in) - log N(phi_t; mu_out, sigma_out).
An example with no in (or no out) shadow falls back to the mean over all examples of that side.

Metrics pool the (target, example) pairs of all targets into one ROC (``gdc.evaluation.mia.roc_metrics``): members
are pairs where the target trained on the example. Both scores are comparable across targets (a log-likelihood
ratio, a loss), and pooling R x N/2 non-members makes 1% FPR resolvable on small pools.
"""

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from gdc.evaluation import mia


def logit_confidence(logits_NxK: jax.Array, y_N: jax.Array) -> jax.Array:
    """log(p_y / (1 - p_y)) computed stably from logits, ``[N]``."""
    z_y = jnp.take_along_axis(logits_NxK, y_N[:, None], axis=1)[:, 0]
    others_NxK = jnp.where(jax.nn.one_hot(y_N, logits_NxK.shape[1], dtype=bool), -jnp.inf, logits_NxK)
    return z_y - jax.nn.logsumexp(others_NxK, axis=1)


def _side_stats(phi_RxN: np.ndarray, mask_RxN: np.ndarray) -> tuple[np.ndarray, float]:
    count_N = mask_RxN.sum(axis=0)
    total_N = np.where(mask_RxN, phi_RxN, 0.0).sum(axis=0)
    fallback = total_N.sum() / max(count_N.sum(), 1)
    mu_N = np.where(count_N > 0, total_N / np.maximum(count_N, 1), fallback)
    resid = (phi_RxN - mu_N[None, :])[mask_RxN]
    return mu_N, float(max(resid.std(), 1e-6)) if resid.size else 1.0


def lira_scores(phi_RxN: np.ndarray, in_RxN: np.ndarray) -> np.ndarray:
    """Online fixed-variance LiRA score of every (target r, example i), ``[R, N]`` float64 (higher = member)."""
    phi_RxN = np.asarray(phi_RxN, np.float64)
    in_RxN = np.asarray(in_RxN, bool)
    r = phi_RxN.shape[0]
    out = np.empty_like(phi_RxN)
    for t in range(r):
        shadows = np.arange(r) != t
        mu_in, sd_in = _side_stats(phi_RxN[shadows], in_RxN[shadows])
        mu_out, sd_out = _side_stats(phi_RxN[shadows], ~in_RxN[shadows])
        out[t] = scipy.stats.norm.logpdf(phi_RxN[t], mu_in, sd_in) - scipy.stats.norm.logpdf(phi_RxN[t], mu_out, sd_out)
    return out


def pooled_metrics(score_RxN: np.ndarray, in_RxN: np.ndarray, subset_N: np.ndarray | None = None, prefix="mia"):
    """``mia.roc_metrics`` over all (target, example) pairs, optionally only examples in ``subset_N``."""
    in_RxN = np.asarray(in_RxN, bool)
    keep_RxN = np.ones_like(in_RxN) if subset_N is None else np.broadcast_to(np.asarray(subset_N, bool), in_RxN.shape)
    score_RxN = np.asarray(score_RxN, np.float64)
    return mia.roc_metrics(score_RxN[in_RxN & keep_RxN], score_RxN[~in_RxN & keep_RxN], prefix)


def attack(logits_RxNxK: np.ndarray, y_N: np.ndarray, in_RxN: np.ndarray, subsets: dict[str, np.ndarray]) -> dict:
    """Loss attack and LiRA on every subset (name -> bool [N]; "all" is added); returns flat metrics and scores."""
    logits = jnp.asarray(logits_RxNxK)
    y = jnp.asarray(y_N)
    phi_RxN = np.asarray(jax.vmap(logit_confidence, in_axes=(0, None))(logits, y), np.float64)
    logp_RxNxK = jax.nn.log_softmax(logits, axis=-1)
    loss_RxN = -np.asarray(jnp.take_along_axis(logp_RxNxK, y[None, :, None], axis=2)[..., 0], np.float64)
    scores = {"loss": mia.loss_scores(loss_RxN), "lira": lira_scores(phi_RxN, in_RxN)}
    out = {}
    for sub_name, sub_N in {"all": None, **subsets}.items():
        if sub_N is not None and not ((in_RxN & sub_N[None]).any() and (~in_RxN & sub_N[None]).any()):
            continue  # an empty subset (e.g. no hotspot on a tiny run) has no ROC
        for attack_name, s_RxN in scores.items():
            out.update(pooled_metrics(s_RxN, in_RxN, sub_N, prefix=f"{attack_name}_{sub_name}"))
    return {"metrics": out, "scores": scores}
