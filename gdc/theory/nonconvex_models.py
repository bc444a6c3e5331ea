"""The non-convex models of claim 3 as flat-parameter tasks, their probe run and their vmapped SGD retrains.

``make_task`` builds gdc.models' MLP (synthetic blobs with label noise) or CharLSTM (pydoc text) with one flat float32
parameter vector ``theta_P`` and the data splits every measurement of ``gdc.theory.nonconvex`` uses. ``probe`` is the
plain-SGD run with the engine's tracker (``gdc.theory.sgd``); ``retrain`` runs R SGD trainings from the same
initialisation with per-run weights, data order and data, ``RETRAIN_CHUNK`` at a time in one vmap.
"""

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from gdc import influence, losses, models
from gdc import tracker as tracker_lib
from gdc.data.sources import DataConfig, build_dataset
from gdc.theory import sgd
from gdc.theory.config import NONCONVEX_MODELS, TheoryConfig

NUM_GAP_TEST = 512


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One non-convex model and its data; hashable by identity so that jitted helpers can take it as static."""

    name: str
    loss_fn: Callable  # (theta_P, batch) -> loss_B
    acc_fn: Callable
    logits_fn: Callable  # (theta_P, batch) -> logits
    mean_loss_fn: Callable  # (logits, batch) -> scalar mean loss
    theta0_P: jax.Array
    train: dict
    hessian: dict  # the training examples the Gauss-Newton matrix averages over
    influence_ids: np.ndarray  # training examples whose self-influence is computed by CG and LiSSA
    test: dict  # lds_test held-out examples (LDS, LOO)
    gap_test: dict  # up to NUM_GAP_TEST held-out examples (generalization gap)
    replacements: dict  # held-out examples used as replace-one substitutes
    flags_N: np.ndarray | None
    lr: float
    epochs: int
    batch_size: int
    eps: float
    eps_absolute: tuple[float, ...]


def make_task(name: str, cfg: TheoryConfig, seed: int) -> Task:
    j = NONCONVEX_MODELS.index(name)
    if name == "mlp":
        data_cfg = DataConfig(
            source="synthetic",
            num_examples=2 * cfg.mlp_examples,
            num_features=cfg.mlp_features,
            num_classes=cfg.mlp_classes,
            label_noise=cfg.mlp_label_noise,
            heldout_fraction=0.5,
            max_examples=cfg.mlp_examples,
            split_seed=seed,
        )
        model_cfg = models.ModelConfig(name="mlp", width=cfg.mlp_width, depth=1)
        keys = ("x", "y")
        hyper = (cfg.mlp_lr, cfg.mlp_epochs, cfg.mlp_batch, cfg.mlp_eps, cfg.mlp_eps_absolute)
    else:
        data_cfg = DataConfig(source="pydoc", seq_len=cfg.lstm_seq_len, max_examples=cfg.lstm_examples, split_seed=seed)
        model_cfg = models.ModelConfig(name="lstm", width=cfg.lstm_width, depth=1)
        keys = ("tokens", "token_mask")
        hyper = (cfg.lstm_lr, cfg.lstm_epochs, cfg.lstm_batch, cfg.lstm_eps, cfg.lstm_eps_absolute)
    ds = build_dataset(data_cfg)
    graphdef, params = models.build(
        model_cfg,
        seed=seed,
        seq_len=data_cfg.seq_len,
        num_features=data_cfg.num_features,
        num_classes=data_cfg.num_classes,
    )
    theta0_P, unravel = influence.flatten(params)

    def loss_fn(theta_P, batch):
        return models.per_example_loss(graphdef, unravel(theta_P), batch)[0]

    def acc_fn(theta_P, batch):
        return models.per_example_loss(graphdef, unravel(theta_P), batch)[1]

    def logits_fn(theta_P, batch):
        return models.forward(graphdef, unravel(theta_P), batch)

    def mean_loss_fn(logits, batch):
        if name == "mlp":
            return losses.classification_nll(logits, batch["y"])[0].mean()
        return losses.sequence_nll(logits, batch["tokens"][:, 1:], batch["token_mask"])[0].mean()

    held = {k: ds.heldout[k] for k in keys}
    m, n = ds.num_heldout, ds.num_train
    if m < cfg.lds_test[j] + cfg.stability_examples:
        raise ValueError(f"{name}: {m} held-out examples are fewer than lds_test + stability_examples.")
    pick = lambda lo, hi: {k: jnp.asarray(v[lo:hi]) for k, v in held.items()}  # noqa: E731
    rng = np.random.default_rng([seed, 5])
    hess_ids = np.sort(rng.permutation(n)[: cfg.hessian_examples[j] or n])
    infl_ids = np.sort(rng.permutation(n)[: min(n, cfg.influence_examples[j])])
    return Task(
        name=name,
        loss_fn=loss_fn,
        acc_fn=acc_fn,
        logits_fn=logits_fn,
        mean_loss_fn=mean_loss_fn,
        theta0_P=theta0_P,
        train={k: jnp.asarray(ds.train[k]) for k in keys},
        hessian={k: jnp.asarray(ds.train[k][hess_ids]) for k in keys},
        influence_ids=infl_ids,
        test=pick(0, cfg.lds_test[j]),
        gap_test=pick(0, min(m, NUM_GAP_TEST)),
        replacements=pick(m - cfg.stability_examples, m),
        flags_N=ds.train.get("is_noisy"),
        lr=hyper[0],
        epochs=hyper[1],
        batch_size=hyper[2],
        eps=hyper[3],
        eps_absolute=hyper[4],
    )


def num_examples(batch: dict) -> int:
    """Rows of a batch of arrays."""
    return jax.tree.leaves(batch)[0].shape[0]


def probe(task: Task) -> dict:
    tracker_cfg = tracker_lib.TrackerConfig(criterion="loss", eps_low=task.eps, eps_high=task.eps)
    run = sgd.jit_train(
        task.loss_fn,
        lr=task.lr,
        epochs=task.epochs,
        batch_size=task.batch_size,
        tracker_cfg=tracker_cfg,
        acc_fn=task.acc_fn,
    )
    out = run(task.theta0_P, task.train, jax.random.key(0), None)
    fields = tracker_lib.to_numpy(out["tracker"])
    loss_ExN = np.asarray(out["loss_ExN"], np.float32)
    return {
        "theta_P": out["theta_P"],
        "thetas_ExP": out["thetas_ExP"],
        "loss_ExN": loss_ExN,
        "tracker": fields,
        "m_N": fields["forget_N"] / max(loss_ExN.shape[0] - 1, 1),
    }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _retrain(task: Task, normalize: bool, data_R: dict, keys_R: jax.Array, w_RxN: jax.Array) -> jax.Array:
    """Final parameters ``[R, P]`` of R SGD runs (stacked datasets, keys and weights), one vmap."""
    train = functools.partial(
        sgd.train, task.loss_fn, lr=task.lr, epochs=task.epochs, batch_size=task.batch_size, normalize=normalize
    )
    return jax.vmap(lambda d, k, w: train(task.theta0_P, d, k, w)["theta_P"])(data_R, keys_R, w_RxN)


RETRAIN_CHUNK = 10  # runs per vmapped call: one compiled shape serves every experiment


def retrain(task: Task, w_RxN: np.ndarray, *, normalize: bool, keys_R=None, data_R=None) -> jax.Array:
    """Final parameters ``[R, P]`` of R SGD runs from ``task.theta0_P``, ``RETRAIN_CHUNK`` at a time.

    Args:
      w_RxN: per-run example weights.
      normalize: the engine's batch-renormalised weighting (True) or raw weights (False, see gdc.theory.sgd).
      keys_R: data-order keys (default: key 0, the probe run's order, for every run).
      data_R: per-run training arrays (default: ``task.train`` for every run).
    """
    r = w_RxN.shape[0]
    keys_R = jnp.stack([jax.random.key(0)] * r) if keys_R is None else keys_R
    if data_R is None:
        data_R = jax.tree.map(lambda a: np.broadcast_to(np.asarray(a), (r, *a.shape)), task.train)
    pad = -r % RETRAIN_CHUNK
    take = np.concatenate([np.arange(r), np.full(pad, r - 1)])
    out = []
    for lo in range(0, r + pad, RETRAIN_CHUNK):
        ids = take[lo : lo + RETRAIN_CHUNK]
        chunk = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[ids]), data_R)  # noqa: B023
        w = jnp.asarray(np.asarray(w_RxN)[ids], jnp.float32)
        out.append(_retrain(task, normalize, chunk, keys_R[ids], w))
    return jnp.concatenate(out)[:r]
