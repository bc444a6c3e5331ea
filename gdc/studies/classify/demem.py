"""Selective de-memorization (DeMem-style, Luo & Li 2025) against uniform DP-SGD, judged by MIA vs test accuracy.

The penalty (DeMem's exact form is not public; this is our choice): on flagged examples the training loss is
  loss_i + lambda * max(0, b - loss_i),
a hinge that keeps the flagged example's loss above the floor b. With lambda = 2 (the default) this is
|loss_i - b| + b, per-example flooding (Ishida et al. 2020): below b the gradient is reversed, so the example is
fitted to loss ~ b and never memorized to loss 0. Unflagged examples keep the plain cross-entropy.

Arms, each training ``models`` MLPs on random halves of the pool in one vmap (LiRA's shadows,
``gdc.studies.classify.lira``):
  * erm: plain SGD.
  * demem_loss: the penalty on the top-k examples by early loss d (the loss-based risk proxy).
  * demem_hotspot: the penalty on GenDataCarto's Hotspot-Memorized quadrant (low d, high m), k examples.
  * demem_loss_<q>pct: the penalty on the top q% by d (a larger flagged set; ``loss_fractions``).
  * dp_eps<E>: DP-SGD with Poisson sampling (``gdc.studies.classify.dpsgd``) at the noise multiplier whose RDP
    epsilon at ``delta`` is E (``target_epsilons``), q = batch_size / (pool / 2), steps = epochs * (pool / 2) /
    batch_size (the selective arms' number of steps and expected batch size).
  * dp_sigma<s>: the same DP-SGD at a given noise multiplier (``noise_multipliers``), its epsilon reported.
  * untrained: the models at their initialisation (the attack's control: no membership signal, AUC ~0.5).
Every model of an arm starts from its own initialisation (model r of seed s: MLP seed 10000 (s + 1) + r), the same
R initialisations in every arm; the selective arms have no formal privacy guarantee (epsilon = infinity).
The scorers d, m (probe) and 1 - p_ho (cross-fitted from the ERM arm's models, see ``compare_scorers``) are compared
as detectors of flipped/atypical rows and of per-example LiRA exposure. The flags come from one GenDataCarto probe
run on the whole pool (``common.probe``): flagging never looks at a target's membership, so it leaks nothing to the
attack.
"""

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from gdc import scoring
from gdc.studies.classify import common, dpsgd, lira, mat
from gdc.studies.classify.config import DememConfig
from gdc.theory import sgd

HOTSPOT = scoring.QUADRANT_NAMES.index("Hotspot-Memorized")


def penalized_loss(loss_B: jax.Array, flag_B: jax.Array, floor: float, penalty: float) -> jax.Array:
    """loss + penalty * flag * max(0, floor - loss), per example."""
    return loss_B + penalty * flag_B.astype(loss_B.dtype) * jnp.maximum(floor - loss_B, 0.0)


@functools.partial(jax.jit, static_argnums=(0,), static_argnames=("epochs", "batch_size"))
def train_penalized(net, data_R, theta0_RxP, keys_R, *, lr, epochs, batch_size, floor, penalty):
    """Final theta ``[R, P]`` of R SGD runs (stacked datasets holding x, y, flag), run r from theta0_RxP[r]."""

    def loss_fn(theta_P, batch):
        return penalized_loss(net.loss_fn(theta_P, batch), batch["flag"], floor, penalty)

    train = functools.partial(sgd.train, loss_fn, lr=lr, epochs=epochs, batch_size=batch_size)
    return jax.vmap(lambda d, t, k: train(t, d, k)["theta_P"])(data_R, theta0_RxP, keys_R)


def init_params(cfg: DememConfig, seed: int) -> jax.Array:
    """theta0_RxP: model r of seed s is initialised with MLP seed 10000 (s + 1) + r (independent shadows)."""
    return jnp.stack(
        [
            common.mlp(cfg.num_features, cfg.num_classes, cfg.width, cfg.depth, 10_000 * (seed + 1) + r).theta0_P
            for r in range(cfg.models)
        ]
    )


@functools.lru_cache(maxsize=None)
def dp_arms(cfg: DememConfig) -> dict[str, dict]:
    """name -> the accounting of each DP arm (``dpsgd.describe``): calibrated targets first, then given sigmas."""
    n = cfg.pool // 2
    q, steps = cfg.batch_size / n, cfg.epochs * n // cfg.batch_size
    sigmas = {f"dp_eps{e:g}": dpsgd.sigma_for_epsilon(e, q, steps, cfg.delta) for e in cfg.target_epsilons}
    sigmas.update({f"dp_sigma{s:g}": s for s in cfg.noise_multipliers})
    return {name: dpsgd.describe(s, q, steps, cfg.delta, n) for name, s in sigmas.items()}


def compare_scorers(logits_RxNxK, y_N, in_RxN, lira_RxN, d_N, m_N, hard_N) -> dict:
    """d, m and the held-out score 1 - p_ho as detectors of flipped/atypical rows and of LiRA exposure under ERM.

    p_ho is cross-fitted for free from the shadow models: for each example, the mean softmax of the models that did
    not train on it gives held-out log-probabilities f_ho, calibrated as in MAT (``mat.p_ho_score``, tau = 1).
    Exposure of example i = mean LiRA score over the targets that trained on i minus the mean over those that did not.
    """
    probs_RxNxK = np.asarray(jax.nn.softmax(jnp.asarray(logits_RxNxK), axis=-1), np.float64)
    out_RxN = ~in_RxN
    p_out_NxK = (probs_RxNxK * out_RxN[:, :, None]).sum(0) / np.maximum(out_RxN.sum(0), 1)[:, None]
    f_ho_NxK = jnp.asarray(np.log(np.maximum(p_out_NxK, 1e-12)), jnp.float32)
    p_ho_N = mat.p_ho_score(f_ho_NxK, jnp.asarray(y_N), 1.0)
    member_mean = (lira_RxN * in_RxN).sum(0) / np.maximum(in_RxN.sum(0), 1)
    exposure_N = member_mean - (lira_RxN * out_RxN).sum(0) / np.maximum(out_RxN.sum(0), 1)
    out = {}
    for name, score_N in (("d", d_N), ("m", m_N), ("1_minus_p_ho", p_ho_N)):
        out[f"auroc_hard_{name}"] = common.auroc(score_N, hard_N)
        out[f"spearman_exposure_{name}"] = float(scipy.stats.spearmanr(score_N, exposure_N).statistic)
    return out


def halves(pool: int, models: int, seed: int) -> np.ndarray:
    """in_RxN: each model's random half of the pool (exactly pool / 2 members each)."""
    rng = np.random.default_rng([seed, 7])
    in_RxN = np.zeros((models, pool), bool)
    for r in range(models):
        in_RxN[r, rng.permutation(pool)[: pool // 2]] = True
    return in_RxN


def run_seed(cfg: DememConfig, seed: int) -> dict:
    pool = common.class_table(
        cfg.pool,
        cfg.num_features,
        cfg.num_classes,
        cfg.separation,
        seed,
        label_noise=cfg.label_noise,
        atypical=cfg.atypical,
    )
    test = common.class_table(cfg.num_test, cfg.num_features, cfg.num_classes, cfg.separation, seed)
    net = common.mlp(cfg.num_features, cfg.num_classes, cfg.width, cfg.depth, seed)
    pr = common.probe(
        net,
        pool,
        jax.random.key(seed),
        lr=cfg.lr,
        epochs=cfg.probe_epochs,
        batch_size=cfg.batch_size,
        early_epochs=cfg.early_epochs,
        eps=cfg.eps,
    )
    hotspot_N = pr["quadrant_N"] == HOTSPOT
    k = int(hotspot_N.sum())  # 0 (possible on tiny runs) makes both penalty arms plain ERM; the report shows k
    top_loss_N = np.zeros(cfg.pool, bool)
    top_loss_N[scoring.top_fraction(pr["d_N"], k / cfg.pool, tie_break_N=pr["m_N"], seed=seed)[0]] = True
    hard_N = pool["is_noisy"] | pool["is_atypical"]

    in_RxN = halves(cfg.pool, cfg.models, seed)
    ids_RxM = np.stack([np.flatnonzero(row) for row in in_RxN])
    keys_R = jax.random.split(jax.random.key(seed + 1000), cfg.models)

    def stacked(flag_N):
        return {
            "x": jnp.asarray(pool["x"][ids_RxM]),
            "y": jnp.asarray(pool["y"][ids_RxM]),
            "flag": jnp.asarray(flag_N[ids_RxM].astype(np.float32)),
        }

    arms = {"erm": None, "demem_loss": top_loss_N, "demem_hotspot": hotspot_N}
    for fraction in cfg.loss_fractions:
        flag_N = np.zeros(cfg.pool, bool)
        flag_N[scoring.top_fraction(pr["d_N"], fraction, tie_break_N=pr["m_N"], seed=seed)[0]] = True
        arms[f"demem_loss_{fraction * 100:g}pct"] = flag_N
    accounting = dp_arms(cfg)
    arms.update({name: "dp" for name in accounting})
    arms["untrained"] = "untrained"
    theta0_RxP = init_params(cfg, seed)
    x_pool, x_test = jnp.asarray(pool["x"]), jnp.asarray(test["x"])
    subsets = {"hotspot": hotspot_N, "top_loss": top_loss_N, "noisy_or_atypical": hard_N}
    out = {
        "seed": seed,
        "flagged": k,
        "overlap_hotspot_top_loss": int((hotspot_N & top_loss_N).sum()),
        "hard_in_hotspot": int((hard_N & hotspot_N).sum()),
        "hard_in_top_loss": int((hard_N & top_loss_N).sum()),
        "hard_total": int(hard_N.sum()),
        "quadrant_counts": pr["quadrant_info"]["counts"],
        "dp": accounting,
        "arms": {},
    }
    for name, arm in arms.items():
        start = time.time()
        extra = {"epsilon_rdp": float("inf")}  # no formal guarantee for the non-private arms
        if isinstance(arm, str) and arm == "dp":
            acc = accounting[name]
            theta_RxP, overflow_R, included_R = dpsgd.train(
                net,
                stacked(np.zeros(cfg.pool, bool)),
                theta0_RxP,
                jax.random.split(jax.random.key(seed + 2000), cfg.models),
                lr=cfg.lr,
                steps=acc["steps"],
                q=acc["sampling_rate"],
                b_max=acc["padded_batch"],
                clip=cfg.clip,
                sigma=acc["noise_multiplier"],
            )
            extra = {
                "epsilon_rdp": acc["epsilon_rdp"],
                "epsilon_pld": acc["epsilon_pld"],
                "overflow_steps": int(np.asarray(overflow_R).sum()),
                "inclusion_rate": float(np.asarray(included_R).sum() / (cfg.models * acc["steps"] * (cfg.pool // 2))),
            }
        elif isinstance(arm, str):
            theta_RxP = theta0_RxP
        else:
            flag_N = np.zeros(cfg.pool, bool) if arm is None else arm
            theta_RxP = train_penalized(
                net,
                stacked(flag_N),
                theta0_RxP,
                keys_R,
                lr=cfg.lr,
                epochs=cfg.epochs,
                batch_size=cfg.batch_size,
                floor=cfg.floor,
                penalty=cfg.penalty,
            )
        common.check_finite(f"arm {name}, seed {seed}: parameters", theta_RxP)
        logits_pool = jax.vmap(net.logits_fn, in_axes=(0, None))(theta_RxP, x_pool)
        logits_test = jax.vmap(net.logits_fn, in_axes=(0, None))(theta_RxP, x_test)
        test_acc_R = np.asarray((jnp.argmax(logits_test, axis=-1) == jnp.asarray(test["y"])[None]).mean(axis=1))
        train_correct_RxN = np.asarray(jnp.argmax(logits_pool, axis=-1) == jnp.asarray(pool["y"])[None])
        att = lira.attack(np.asarray(logits_pool), pool["y"], in_RxN, subsets)
        if name == "erm":
            out["scorers"] = compare_scorers(
                np.asarray(logits_pool), pool["y"], in_RxN, att["scores"]["lira"], pr["d_N"], pr["m_N"], hard_N
            )
        out["arms"][name] = {
            "test_accuracy": float(test_acc_R.mean()),
            "train_accuracy": float(train_correct_RxN[in_RxN].mean()),
            **extra,
            **att["metrics"],
        }
        out.setdefault("_roc", {})[name] = {
            f"{attack}_{side}": att["scores"][attack][m_RxN]
            for attack in ("lira", "lira_offline")
            for side, m_RxN in (("member", in_RxN), ("nonmember", ~in_RxN))
        }
        print(f"[demem] seed {seed}, arm {name}: {time.time() - start:.0f} s", flush=True)
    return out
