"""Shared pieces of the classifier studies: synthetic tables, gdc's MLP as a flat vector, the GenDataCarto probe.

The probe trains with ``gdc.theory.sgd`` (minibatch SGD with the engine's tracker folded in after every epoch, at
fixed parameters: a scoring pass) and scores the tracker's output with ``gdc.scoring``: d = mean loss over the first
``early_epochs`` epochs, m = forget events / (E - 1) under the loss rule with threshold ``eps``, quadrants at the
medians (the paper's strict rule).
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from sklearn import metrics

from gdc import influence, losses, models, scoring
from gdc import tracker as tracker_lib
from gdc.theory import sgd


def class_table(
    n: int, num_features: int, num_classes: int, separation: float, seed: int, *, label_noise=0.0, atypical=0.0
) -> dict[str, np.ndarray]:
    """Gaussian classes around random means at radius ``separation``; optional atypical rows and flipped labels.

    Returns x (float32 [n, D]), y (int32 [n]), is_atypical and is_noisy (bool [n]). The class means depend only on
    ``seed``'s first entropy word, so pools and test sets drawn with seeds (s, 0) and (s, 1) share them.
    """
    means = np.random.default_rng([seed, 99]).normal(size=(num_classes, num_features))
    means *= separation / np.linalg.norm(means, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, n, 1])
    y = rng.integers(num_classes, size=n).astype(np.int32)
    x = means[y] + rng.normal(size=(n, num_features))
    is_atypical = rng.random(n) < atypical
    far = rng.normal(size=(n, num_features))
    far *= 2.0 * separation / np.linalg.norm(far, axis=1, keepdims=True)
    x = np.where(is_atypical[:, None], x + far, x)
    is_noisy = rng.random(n) < label_noise
    y = np.where(is_noisy, (y + rng.integers(1, num_classes, size=n)) % num_classes, y).astype(np.int32)
    return {"x": x.astype(np.float32), "y": y, "is_atypical": is_atypical, "is_noisy": is_noisy}


@dataclasses.dataclass(frozen=True, eq=False)
class Net:
    """gdc's MLP on a flat parameter vector; hashable by identity so jitted helpers can take it as static."""

    theta0_P: jax.Array
    logits_fn: Callable  # (theta_P, x_BxD) -> logits_BxK
    loss_fn: Callable  # (theta_P, batch) -> loss_B (cross-entropy)
    acc_fn: Callable


def mlp(num_features: int, num_classes: int, width: int, depth: int, seed: int) -> Net:
    graphdef, params = models.build(
        models.ModelConfig(name="mlp", width=width, depth=depth),
        seed=seed,
        num_features=num_features,
        num_classes=num_classes,
    )
    theta0_P, unravel = influence.flatten(params)

    def logits_fn(theta_P, x_BxD):
        return models.forward(graphdef, unravel(theta_P), {"x": x_BxD})

    def loss_fn(theta_P, batch):
        return losses.classification_nll(logits_fn(theta_P, batch["x"]), batch["y"])[0]

    def acc_fn(theta_P, batch):
        return losses.classification_nll(logits_fn(theta_P, batch["x"]), batch["y"])[1]

    return Net(theta0_P=theta0_P, logits_fn=logits_fn, loss_fn=loss_fn, acc_fn=acc_fn)


def probe(
    net: Net, data: dict, key: jax.Array, *, lr: float, epochs: int, batch_size: int, early_epochs: int, eps: float
) -> dict:
    """One SGD run on ``data`` with the tracker; returns the final theta_P and the GenDataCarto scores.

    Returns:
      theta_P, loss_ExN (the scoring-pass losses), d_N, m_N, forget_N, quadrant_N (int8 codes into
      scoring.QUADRANT_NAMES) and quadrant_info.
    """
    cfg = tracker_lib.TrackerConfig(criterion="loss", eps_low=eps, eps_high=eps, early_epochs=early_epochs)
    run = sgd.jit_train(net.loss_fn, lr=lr, epochs=epochs, batch_size=batch_size, tracker_cfg=cfg, acc_fn=net.acc_fn)
    out = run(net.theta0_P, {"x": jnp.asarray(data["x"]), "y": jnp.asarray(data["y"])}, key, None)
    check_finite("probe parameters", out["theta_P"])
    fields = tracker_lib.to_numpy(out["tracker"])
    d_N = fields["loss_sum_early_N"].astype(np.float64) / np.maximum(fields["count_early_N"], 1)
    mem = scoring.memorization(fields["forget_N"], epochs - 1, fields["learn_N"] > 0)
    quadrant_N, info = scoring.quadrants(d_N, mem["m_N"], state_N=mem["state_N"])
    return {
        "theta_P": out["theta_P"],
        "loss_ExN": np.asarray(out["loss_ExN"], np.float32),
        "d_N": d_N,
        "m_N": mem["m_N"],
        "forget_N": fields["forget_N"],
        "quadrant_N": quadrant_N,
        "quadrant_info": info,
    }


def check_finite(name: str, x) -> None:
    """Raises FloatingPointError when a trained quantity holds NaN or inf (a diverged run must not be reported)."""
    if not np.all(np.isfinite(np.asarray(x))):
        raise FloatingPointError(f"{name}: non-finite values (the run diverged; lower the learning rate).")


def auroc(score_N: np.ndarray, positive_N: np.ndarray) -> float:
    """ROC AUC of ``score_N`` for flagging ``positive_N`` (NaN when one class is empty)."""
    positive_N = np.asarray(positive_N, bool)
    if positive_N.all() or not positive_N.any():
        return float("nan")
    return float(metrics.roc_auc_score(positive_N, np.nan_to_num(np.asarray(score_N, np.float64), nan=-np.inf)))


def mean_std(values) -> dict[str, float]:
    """{"mean", "std" (ddof 0), "n"} of finite values (NaN mean when none)."""
    v = np.asarray([x for x in values if x is not None and not isinstance(x, str) and np.isfinite(x)], np.float64)
    return {"mean": float(v.mean()) if v.size else float("nan"), "std": float(v.std()) if v.size else 0.0, "n": len(v)}
