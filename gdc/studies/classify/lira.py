"""Membership inference on R models trained on random halves of one pool: the loss attack and LiRA, online and
offline.

LiRA (Carlini et al. 2022), fixed variance: each model in turn is the target and the other R - 1 are its shadows
(independently initialised, each on its own random half). For example i, phi = log p_y - log(1 - p_y) (the
logit-scaled confidence, computed from logits as z_y - logsumexp_{k != y} z_k); mu_in(i) / mu_out(i) = the MEDIAN of
phi over the shadows that did / did not train on i (the per-example centre of the authors' released scoring code,
np.median over shadows; the only per-example statistic here); sigma_in / sigma_out = the std of (phi - mu) over all
(shadow, example) pairs of that side (the fixed-variance variant the paper recommends for few shadows).
  * online: score = log N(phi_t; mu_in, sigma_in) - log N(phi_t; mu_out, sigma_out);
  * offline (out shadows only, one-sided as in the paper: members have larger phi): score = log Phi((phi_t -
    mu_out) / sigma_out), the log-probability that an out model's phi falls below the target's.
An example with no in (or no out) shadow falls back to the median over all pairs of that side.

Metrics pool the (target, example) pairs of all targets into one ROC (``gdc.evaluation.mia.roc_metrics``): members
are pairs where the target trained on the example. The scores are comparable across targets (a log-likelihood
ratio, a log-probability, a loss), and pooling R x N/2 non-members makes 1% and 0.1% FPR resolvable on small pools.
"""

import warnings

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


def side_stats(phi_RxN: np.ndarray, mask_RxN: np.ndarray) -> tuple[np.ndarray, float]:
    """(mu_N: per-example median of phi over the masked shadows, pooled std of phi - mu over masked pairs)."""
    if not mask_RxN.any():
        return np.zeros(phi_RxN.shape[1]), 1.0
    with warnings.catch_warnings():  # an example with no shadow on this side is an all-NaN column: handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        med_N = np.nanmedian(np.where(mask_RxN, phi_RxN, np.nan), axis=0)
    mu_N = np.where(mask_RxN.any(axis=0), med_N, np.median(phi_RxN[mask_RxN]))
    resid = (phi_RxN - mu_N[None, :])[mask_RxN]
    return mu_N, float(max(resid.std(), 1e-6))


def lira_scores(phi_RxN: np.ndarray, in_RxN: np.ndarray) -> dict[str, np.ndarray]:
    """Online and offline fixed-variance LiRA scores of every (target r, example i), ``{"lira", "lira_offline"}``
    -> ``[R, N]`` float64 (higher = member)."""
    phi_RxN = np.asarray(phi_RxN, np.float64)
    in_RxN = np.asarray(in_RxN, bool)
    r = phi_RxN.shape[0]
    online, offline = np.empty_like(phi_RxN), np.empty_like(phi_RxN)
    for t in range(r):
        shadows = np.arange(r) != t
        mu_in, sd_in = side_stats(phi_RxN[shadows], in_RxN[shadows])
        mu_out, sd_out = side_stats(phi_RxN[shadows], ~in_RxN[shadows])
        log_in = scipy.stats.norm.logpdf(phi_RxN[t], mu_in, sd_in)
        online[t] = log_in - scipy.stats.norm.logpdf(phi_RxN[t], mu_out, sd_out)
        offline[t] = scipy.stats.norm.logcdf(phi_RxN[t], mu_out, sd_out)
    return {"lira": online, "lira_offline": offline}


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
    scores = {"loss": mia.loss_scores(loss_RxN), **lira_scores(phi_RxN, in_RxN)}
    out = {}
    for sub_name, sub_N in {"all": None, **subsets}.items():
        if sub_N is not None and not ((in_RxN & sub_N[None]).any() and (~in_RxN & sub_N[None]).any()):
            continue  # an empty subset (e.g. no hotspot on a tiny run) has no ROC
        for attack_name, s_RxN in scores.items():
            out.update(pooled_metrics(s_RxN, in_RxN, sub_N, prefix=f"{attack_name}_{sub_name}"))
    return {"metrics": out, "scores": scores}
