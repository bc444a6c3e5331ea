"""L-infinity attacks and adversarial-training objectives on gdc's MLP (``common.Net``), inputs in the box [0, 1].

  * ``fgsm``: x + eps sign(grad_x loss), clipped to [0, 1] (Goodfellow et al. 2015; no random start).
  * ``pgd``: ``steps`` signed-gradient steps of size ``step_size`` from x itself (no random start, so a run is a
    function of its key alone), each projected onto the eps-ball around x and the box (Madry et al. 2018); each row
    keeps its highest-loss iterate.
  * TRADES (Zhang et al. 2019): CE(x) + beta KL(p(x) || p(x')), x' = PGD on the KL from x + 0.001 noise (the KL has
    zero gradient at x' = x, so its start needs the noise; the noise is a fixed per-example array ``noise``).

Every attack's output is under ``stop_gradient``: the training gradient is that of the loss at the attack point
(Danskin), not through the attack. ``objective(kind, ...)`` returns the per-example loss ``(theta_P, batch) -> loss_B``
that ``gdc.theory.sgd.train`` minimises and tracks; with a ``flag`` column in the batch the DeMem-style penalty
``demem.penalized_loss`` is added on the flagged rows, to the adversarial loss (the loss the run is trained on).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp

from gdc.studies.classify import common, demem

KINDS = ("erm", "fgsm", "pgd", "trades")


def project(x_adv_BxD: jax.Array, x_BxD: jax.Array, eps: float) -> jax.Array:
    """The nearest point of the eps-ball around x (L-infinity) inside the pixel box [0, 1]."""
    return jnp.clip(jnp.clip(x_adv_BxD, x_BxD - eps, x_BxD + eps), 0.0, 1.0)


def input_grad(net: common.Net, theta_P: jax.Array, x_BxD: jax.Array, y_B: jax.Array) -> jax.Array:
    """d loss_b / d x_b for every row (the rows' losses are independent, so the gradient of their sum)."""
    return jax.grad(lambda x: net.loss_fn(theta_P, {"x": x, "y": y_B}).sum())(x_BxD)


def fgsm(net: common.Net, theta_P: jax.Array, x_BxD: jax.Array, y_B: jax.Array, eps: float) -> jax.Array:
    x_adv = jnp.clip(x_BxD + eps * jnp.sign(input_grad(net, theta_P, x_BxD, y_B)), 0.0, 1.0)
    return jax.lax.stop_gradient(x_adv)


def pgd(
    net: common.Net,
    theta_P: jax.Array,
    x_BxD: jax.Array,
    y_B: jax.Array,
    *,
    eps: float,
    step_size: float,
    steps: int,
    loss_at: Callable | None = None,
    start_BxD: jax.Array | None = None,
) -> jax.Array:
    """PGD ascent on ``loss_at(x_adv) -> loss_B`` (default: the cross-entropy at y) from ``start_BxD`` (default x).

    Returns, per row, the iterate of highest loss among the start and the ``steps`` projected iterates, so the
    attack's loss is never below the start's (a signed step can overshoot and lower a row's loss).
    """
    if loss_at is None:

        def loss_at(z_BxD):
            return net.loss_fn(theta_P, {"x": z_BxD, "y": y_B})

    def total(z_BxD):
        loss_B = loss_at(z_BxD)
        return loss_B.sum(), loss_B

    value_and_grad = jax.value_and_grad(total, has_aux=True)

    def keep_best(z_BxD, loss_B, best_BxD, best_B):
        better_B = loss_B > best_B
        return jnp.where(better_B[:, None], z_BxD, best_BxD), jnp.where(better_B, loss_B, best_B)

    def body(_, carry):
        z_BxD, best_BxD, best_B = carry
        (_, loss_B), g_BxD = value_and_grad(z_BxD)
        best_BxD, best_B = keep_best(z_BxD, loss_B, best_BxD, best_B)
        return project(z_BxD + step_size * jnp.sign(g_BxD), x_BxD, eps), best_BxD, best_B

    start = x_BxD if start_BxD is None else project(start_BxD, x_BxD, eps)
    init = (start, start, jnp.full(y_B.shape, -jnp.inf, x_BxD.dtype))
    z_BxD, best_BxD, best_B = jax.lax.fori_loop(0, steps, body, init)
    best_BxD, _ = keep_best(z_BxD, loss_at(z_BxD), best_BxD, best_B)
    return jax.lax.stop_gradient(best_BxD)


def kl_rows(logits_p_BxK: jax.Array, logits_q_BxK: jax.Array) -> jax.Array:
    """KL(softmax p || softmax q) per row."""
    logp_BxK = jax.nn.log_softmax(logits_p_BxK, axis=-1)
    return (jnp.exp(logp_BxK) * (logp_BxK - jax.nn.log_softmax(logits_q_BxK, axis=-1))).sum(-1)


def trades_loss(net, theta_P, batch, *, eps, step_size, steps, beta) -> jax.Array:
    x, y = batch["x"], batch["y"]
    logits_clean = net.logits_fn(theta_P, x)
    target = jax.lax.stop_gradient(logits_clean)
    x_adv = pgd(
        net,
        theta_P,
        x,
        y,
        eps=eps,
        step_size=step_size,
        steps=steps,
        loss_at=lambda z: kl_rows(target, net.logits_fn(theta_P, z)),
        start_BxD=x + 0.001 * batch["noise"],
    )
    ce_B = net.loss_fn(theta_P, batch)
    return ce_B + beta * kl_rows(logits_clean, net.logits_fn(theta_P, x_adv))


def objective(
    net: common.Net,
    kind: str,
    *,
    eps: float,
    step_size: float,
    steps: int,
    beta: float = 6.0,
    floor: float | None = None,
    penalty: float = 0.0,
) -> Callable:
    """The per-example training loss of ``kind`` (one of KINDS); with ``floor`` set, plus the penalty on ``flag``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: use one of {KINDS}.")

    def base(theta_P, batch):
        if kind == "erm":
            return net.loss_fn(theta_P, batch)
        if kind == "trades":
            return trades_loss(net, theta_P, batch, eps=eps, step_size=step_size, steps=steps, beta=beta)
        if kind == "fgsm":
            x_adv = fgsm(net, theta_P, batch["x"], batch["y"], eps)
        else:
            x_adv = pgd(net, theta_P, batch["x"], batch["y"], eps=eps, step_size=step_size, steps=steps)
        return net.loss_fn(theta_P, {"x": x_adv, "y": batch["y"]})

    if floor is None:
        return base

    def penalized(theta_P, batch):
        return demem.penalized_loss(base(theta_P, batch), batch["flag"], floor, penalty)

    return penalized
