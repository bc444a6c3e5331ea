"""The convex model of the checks: L2-regularised multinomial logistic regression on a noisy linear teacher.

Invariants:
  * Parameters are one flat vector ``theta_P``, the ``[D + 1, K - 1]`` weights of classes 1..K-1 (bias row last);
    class 0 has logit 0. For K = 2 this is exactly binary logistic regression; for K > 2 it is softmax regression
    in its identifiable (reference-class) form. With ``l2 > 0`` the objective is strictly convex.
  * The objective is ``R(theta; w) = (1/n) sum_i w_i loss_i(theta) + (l2/2) ||theta||^2``; leave-one-out sets
    w_i = 0 and keeps the 1/n.
  * Float64 throughout: callers run under ``jax.enable_x64(True)``; the data are float64 numpy arrays.
  * The task (paper.md §9.2): x ~ N(0, I/D), teacher W ~ N(0, 9), y = argmax(x W + sigma * noise); a fraction of
    the labels is then moved to another class uniformly at random (``is_noisy``), in the training and the test set
    alike, so that test loss - train loss is a generalization gap of one distribution.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdc.types import Batch


def teacher_data(
    n: int, n_test: int, num_features: int, num_classes: int, label_noise: float, seed: int, sigma: float = 0.3
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(train, test) dicts with ``x`` float64 ``[N, D]``, ``y`` int32 ``[N]``, ``is_noisy`` bool ``[N]``."""
    rng = np.random.default_rng([seed, 7])
    w_DxK = rng.normal(size=(num_features, num_classes)) * 3.0

    def draw(m):
        x = rng.normal(size=(m, num_features)) / np.sqrt(num_features)
        y = np.argmax(x @ w_DxK + sigma * rng.normal(size=(m, num_classes)), axis=1).astype(np.int32)
        return x, y

    def flip(y):
        noisy = np.zeros(len(y), bool)
        noisy[rng.choice(len(y), round(label_noise * len(y)), replace=False)] = True
        y = y.copy()
        y[noisy] = (y[noisy] + rng.integers(1, num_classes, size=noisy.sum())) % num_classes
        return y, noisy

    x, y = draw(n)
    x_test, y_test = draw(n_test)
    (y, noisy), (y_test, noisy_test) = flip(y), flip(y_test)
    train = {"x": x, "y": y, "is_noisy": noisy}
    test = {"x": x_test, "y": y_test, "is_noisy": noisy_test}
    return train, test


def draw_replacements(train: dict[str, np.ndarray], num_classes: int, count: int, seed: int) -> dict:
    """``count`` fresh examples from the same input distribution with uniformly random labels (replace-one data)."""
    rng = np.random.default_rng([seed, 11])
    d = train["x"].shape[1]
    return {
        "x": rng.normal(size=(count, d)) / np.sqrt(d),
        "y": rng.integers(0, num_classes, size=count).astype(np.int32),
    }


def num_params(num_features: int, num_classes: int) -> int:
    return (num_features + 1) * (num_classes - 1)


def logits(theta_P: jax.Array, x_BxD: jax.Array, num_classes: int) -> jax.Array:
    """``[B, K]`` logits, class 0 pinned to 0."""
    d = x_BxD.shape[1]
    w_DxK = theta_P.reshape(d + 1, num_classes - 1)
    z_BxK = x_BxD @ w_DxK[:d] + w_DxK[d][None]
    return jnp.concatenate([jnp.zeros_like(z_BxK[:, :1]), z_BxK], axis=1)


@functools.cache
def loss_fn(num_classes: int):
    """Per-example cross-entropy ``(theta_P, batch) -> loss_B`` (one cached function per K, so jits reuse)."""

    def fn(theta_P: jax.Array, batch: Batch) -> jax.Array:
        logp_BxK = jax.nn.log_softmax(logits(theta_P, batch["x"], num_classes), axis=-1)
        return -jnp.take_along_axis(logp_BxK, batch["y"][:, None], axis=-1)[:, 0]

    return fn


@functools.cache
def acc_fn(num_classes: int):
    def fn(theta_P: jax.Array, batch: Batch) -> jax.Array:
        return (jnp.argmax(logits(theta_P, batch["x"], num_classes), axis=-1) == batch["y"]).astype(theta_P.dtype)

    return fn


@functools.cache
def objective(num_classes: int, l2: float):
    """``R(theta_P, w_N)`` over the batch it is given (closed over nothing but K and l2)."""
    per_example = loss_fn(num_classes)

    def fn(theta_P: jax.Array, w_N: jax.Array, batch: Batch) -> jax.Array:
        return (w_N * per_example(theta_P, batch)).mean() + 0.5 * l2 * theta_P @ theta_P

    return fn


def model_batch(data: dict[str, np.ndarray]) -> Batch:
    """The model inputs only (drops bookkeeping such as ``is_noisy``), as device arrays."""
    return {"x": jnp.asarray(data["x"]), "y": jnp.asarray(data["y"])}


def lipschitz_smoothness(x_NxD: np.ndarray, num_classes: int, l2: float) -> tuple[float, float]:
    """(L, beta): bounds on every example's loss-gradient norm and on the smoothness of ``loss_i + (l2/2)||theta||^2``.

    For cross-entropy, ``grad = x~ (p - e_y)[1:]`` with x~ = (x, 1), so ``||grad|| <= sqrt(2) ||x~||`` (``||x~||``
    for K = 2), and the logit Hessian ``diag(p) - p p^T`` has norm <= 1/2 (1/4 for K = 2). The regulariser is common
    to both runs of a replace-one pair, so only the loss gradient enters the stability bound.
    """
    norm2_N = (x_NxD**2).sum(axis=1) + 1.0
    c_grad, c_hess = (1.0, 0.25) if num_classes == 2 else (np.sqrt(2.0), 0.5)
    return float(c_grad * np.sqrt(norm2_N.max())), float(c_hess * norm2_N.max() + l2)


# The TheoryConfig fields a convex probe run depends on; caches and jits key on these only, so that changing an
# unrelated field (say ``claims``) reuses the runs and compiled functions.
TASK_FIELDS = (
    "num_train",
    "num_test",
    "num_features",
    "l2",
    "lr",
    "epochs",
    "batch_size",
    "checkpoints_per_epoch",
    "eps",
    "gtol",
)


def task_view(cfg):
    """``cfg`` with every field outside TASK_FIELDS at its default (a cache / static-argument key)."""
    return type(cfg)(**{f: getattr(cfg, f) for f in TASK_FIELDS})


def probe(num_classes: int, label_noise: float, cfg, seed: int) -> dict:
    """The SGD probe run with the engine's tracker, and the exact L-BFGS optimum, for one convex task (cached).

    Args:
      num_classes: 2 (logistic) or more (softmax).
      label_noise: fraction of flipped training labels.
      cfg: the ``TheoryConfig`` (hashable).
      seed: data and order seed.

    Returns:
      train, test (numpy dicts), batch, test_batch (device), theta_sgd_P, theta_hat_P (float64), fit (L-BFGS info),
      loss_ExN (float32 scoring-pass losses), tracker (``gdc.tracker.to_numpy`` fields), tracker_cfg, m_N (from the
      tracker).
    """
    return _probe(num_classes, label_noise, task_view(cfg), seed)


@functools.cache
def _probe(num_classes: int, label_noise: float, cfg, seed: int) -> dict:
    from gdc import influence
    from gdc import tracker as tracker_lib
    from gdc.theory import sgd

    train, test = teacher_data(cfg.num_train, cfg.num_test, cfg.num_features, num_classes, label_noise, seed)
    batch, test_batch = model_batch(train), model_batch(test)
    tracker_cfg = tracker_lib.TrackerConfig(criterion="loss", eps_low=cfg.eps, eps_high=cfg.eps)
    run = sgd.jit_train(
        loss_fn(num_classes),
        lr=cfg.lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        l2=cfg.l2,
        checkpoints_per_epoch=cfg.checkpoints_per_epoch,
        tracker_cfg=tracker_cfg,
        acc_fn=acc_fn(num_classes),
    )
    p = num_params(cfg.num_features, num_classes)
    out = run(jnp.zeros((p,), jnp.float64), batch, jax.random.key(seed), None)
    fields = tracker_lib.to_numpy(out["tracker"])
    loss_ExN = np.asarray(out["loss_ExN"], np.float32)
    theta_sgd_P = np.asarray(out["theta_P"])
    theta_hat_P, fit = influence.fit_lbfgs(
        objective(num_classes, cfg.l2), theta_sgd_P, jnp.ones((cfg.num_train,)), batch, gtol=cfg.gtol
    )
    return {
        "train": train,
        "test": test,
        "batch": batch,
        "test_batch": test_batch,
        "theta_sgd_P": theta_sgd_P,
        "thetas_ExP": np.asarray(out["thetas_ExP"]),
        "theta_hat_P": theta_hat_P,
        "fit": fit,
        "loss_ExN": loss_ExN,
        "tracker": fields,
        "tracker_cfg": tracker_cfg,
        "m_N": fields["forget_N"] / max(loss_ExN.shape[0] - 1, 1),
    }
