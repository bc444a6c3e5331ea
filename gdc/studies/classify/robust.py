"""DeMem's de-memorization penalty inside adversarial training (Luo & Li 2025), on scikit-learn's digits.

Per seed: the 1797 digits rows (pixels / 16, in [0, 1]) are split into a pool and a test set. One GenDataCarto probe
(PGD-AT on the whole pool, ``gdc.theory.sgd`` with the engine's tracker on the adversarial loss) gives d, m and the
quadrants. Then every arm trains ``models`` MLPs, each on a random half of the pool, in one vmap:
  * erm, fgsm_at, trades: natural training, FGSM-AT, TRADES (``baselines``);
  * pgd_at: PGD-AT;
  * pgd_at+demem_<set>: PGD-AT with ``demem.penalized_loss`` on the adversarial loss of the rows in <set>:
    hotspot (GenDataCarto's Hotspot-Memorized quadrant: low d, high m; k rows), top_loss (the k rows of highest d,
    the loss-based risk proxy DeMem describes), random (k rows drawn at random: the matched-cost control), all (every
    row: the penalty applied uniformly).
Each arm reports natural and PGD robust test accuracy, and membership leakage: the loss-threshold attack and online
LiRA (``lira.attack``) on clean inputs, and the same two attacks on the PGD inputs at the training radius (adversarial
examples leak membership of robust models, Song et al. 2019). The flags come from the probe, which never looks at a
target's membership.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdc import scoring
from gdc.studies.classify import adversarial, common, lira
from gdc.studies.classify.robust_config import DIGITS, RobustConfig
from gdc.theory import sgd

HOTSPOT = scoring.QUADRANT_NAMES.index("Hotspot-Memorized")
FEATURES, CLASSES = 64, 10
KIND = {"erm": "erm", "fgsm_at": "fgsm", "trades": "trades"}


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8 x 8 digits: x float32 [1797, 64] in [0, 1], y int32 [1797]."""
    from sklearn.datasets import load_digits as sk_load

    d = sk_load()
    return (d.data / 16.0).astype(np.float32), d.target.astype(np.int32)


def split(pool: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool ids, test ids): a seeded permutation of the digits rows."""
    perm = np.random.default_rng([seed, 21]).permutation(DIGITS)
    return perm[:pool], perm[pool:]


def arm_names(cfg: RobustConfig) -> list[str]:
    return [*cfg.baselines, "pgd_at", *(f"pgd_at+demem_{s}" for s in cfg.penalty_sets)]


@functools.cache
def functions(cfg: RobustConfig) -> dict:
    """Jitted trainers and attacks of ``cfg``, built once (seeds differ only in theta0 and data, both traced)."""
    net = common.mlp(FEATURES, CLASSES, cfg.width, cfg.depth, seed=0)
    att = dict(eps=cfg.attack_eps, step_size=2.5 * cfg.attack_eps / cfg.attack_steps, steps=cfg.attack_steps)

    def trainer(kind):
        loss = adversarial.objective(net, kind, beta=cfg.trades_beta, floor=cfg.floor, penalty=cfg.penalty, **att)
        train = functools.partial(sgd.train, loss, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size)
        return jax.jit(jax.vmap(lambda t0, d, k: train(t0, d, k)["theta_P"], in_axes=(None, 0, 0)))

    def pgd_logits(theta_RxP, x_NxD, y_N, eps):
        def one(theta_P):
            x_adv = adversarial.pgd(
                net, theta_P, x_NxD, y_N, eps=eps, step_size=2.5 * eps / cfg.eval_steps, steps=cfg.eval_steps
            )
            return net.logits_fn(theta_P, x_adv)

        return jax.vmap(one)(theta_RxP)

    return {
        "net": net,
        "probe_loss": adversarial.objective(net, "pgd", **att),
        "train": {kind: trainer(kind) for kind in adversarial.KINDS},
        "logits": jax.jit(jax.vmap(net.logits_fn, in_axes=(0, None))),
        "pgd_logits": jax.jit(pgd_logits),
    }


def flags(cfg: RobustConfig, d_N: np.ndarray, m_N: np.ndarray, quadrant_N: np.ndarray, seed: int) -> dict:
    """Each penalty set as bool [pool]: hotspot (k rows), top_loss and random (k rows each), all."""
    hotspot_N = quadrant_N == HOTSPOT
    k = int(hotspot_N.sum())
    top_N = np.zeros(cfg.pool, bool)
    top_N[scoring.top_fraction(d_N, k / cfg.pool, tie_break_N=m_N, seed=seed)[0]] = True
    random_N = np.zeros(cfg.pool, bool)
    random_N[np.random.default_rng([seed, 23]).choice(cfg.pool, size=k, replace=False)] = True
    return {"hotspot": hotspot_N, "top_loss": top_N, "random": random_N, "all": np.ones(cfg.pool, bool)}


def accuracy(logits_RxNxK, y_N, mask_RxN=None) -> float:
    correct = np.asarray(jnp.argmax(logits_RxNxK, axis=-1)) == np.asarray(y_N)[None]
    return float(correct.mean() if mask_RxN is None else correct[mask_RxN].mean())


def run_seed(cfg: RobustConfig, seed: int) -> dict:
    fns = functions(cfg)
    x_all, y_all = load_digits()
    pool_ids, test_ids = split(cfg.pool, seed)
    pool = {"x": x_all[pool_ids], "y": y_all[pool_ids]}
    x_test, y_test = jnp.asarray(x_all[test_ids]), jnp.asarray(y_all[test_ids])
    theta0_P = common.mlp(FEATURES, CLASSES, cfg.width, cfg.depth, seed).theta0_P
    probe_net = dataclasses.replace(fns["net"], theta0_P=theta0_P, loss_fn=fns["probe_loss"])
    pr = common.probe(
        probe_net,
        pool,
        jax.random.key(seed),
        lr=cfg.lr,
        epochs=cfg.probe_epochs,
        batch_size=cfg.batch_size,
        early_epochs=cfg.early_epochs,
        eps=cfg.forget_eps,
    )
    sets = flags(cfg, pr["d_N"], pr["m_N"], pr["quadrant_N"], seed)
    k = int(sets["hotspot"].sum())
    print(f"[demem_robust] seed {seed}: probe done, {k} hotspot rows {pr['quadrant_info']['counts']}", flush=True)

    in_RxN = np.zeros((cfg.models, cfg.pool), bool)
    rng = np.random.default_rng([seed, 7])
    for r in range(cfg.models):
        in_RxN[r, rng.permutation(cfg.pool)[: cfg.pool // 2]] = True
    ids_RxM = np.stack([np.flatnonzero(row) for row in in_RxN])
    noise_NxD = np.random.default_rng([seed, 22]).normal(size=pool["x"].shape).astype(np.float32)
    keys_R = jax.random.split(jax.random.key(seed + 1000), cfg.models)
    x_pool, y_pool = jnp.asarray(pool["x"]), jnp.asarray(pool["y"])
    out = {
        "seed": seed,
        "attack_eps": cfg.attack_eps,
        "flagged": k,
        "overlap_hotspot_top_loss": int((sets["hotspot"] & sets["top_loss"]).sum()),
        "overlap_hotspot_random": int((sets["hotspot"] & sets["random"]).sum()),
        "quadrant_counts": pr["quadrant_info"]["counts"],
        "probe_never_forgotten_share": float(np.mean(pr["forget_N"] == 0)),
        "arms": {},
    }
    subsets = {"hotspot": sets["hotspot"], "top_loss": sets["top_loss"]}
    for name in arm_names(cfg):
        flag_N = sets[name.removeprefix("pgd_at+demem_")] if "+demem_" in name else np.zeros(cfg.pool, bool)
        data_R = {
            "x": jnp.asarray(pool["x"][ids_RxM]),
            "y": jnp.asarray(pool["y"][ids_RxM]),
            "noise": jnp.asarray(noise_NxD[ids_RxM]),
            "flag": jnp.asarray(flag_N[ids_RxM].astype(np.float32)),
        }
        theta_RxP = fns["train"][KIND.get(name, "pgd")](theta0_P, data_R, keys_R)
        common.check_finite(f"arm {name}, seed {seed}: parameters", theta_RxP)
        logits_pool = np.asarray(fns["logits"](theta_RxP, x_pool))
        adv_pool = np.asarray(fns["pgd_logits"](theta_RxP, x_pool, y_pool, cfg.attack_eps))
        res = {
            "natural_accuracy": accuracy(fns["logits"](theta_RxP, x_test), y_test),
            "train_accuracy": accuracy(logits_pool, pool["y"], in_RxN),
            "robust_train_accuracy": accuracy(adv_pool, pool["y"], in_RxN),
            "robust_heldout_pool_accuracy": accuracy(adv_pool, pool["y"], ~in_RxN),
        }
        for eps in sorted({*cfg.eval_eps, cfg.attack_eps}):
            res[f"robust_accuracy_eps{eps:g}"] = accuracy(fns["pgd_logits"](theta_RxP, x_test, y_test, eps), y_test)
        clean = lira.attack(logits_pool, pool["y"], in_RxN, subsets)
        adv = lira.attack(adv_pool, pool["y"], in_RxN, {})
        res.update(clean["metrics"])
        res.update({f"adv_{key}": v for key, v in adv["metrics"].items()})
        out["arms"][name] = res
        out.setdefault("_roc", {})[name] = {
            "lira_member": clean["scores"]["lira"][in_RxN],
            "lira_nonmember": clean["scores"]["lira"][~in_RxN],
        }
        print(
            f"[demem_robust] seed {seed} {name}: natural {res['natural_accuracy']:.3f}, robust "
            f"{res[f'robust_accuracy_eps{cfg.attack_eps:g}']:.3f}, LiRA AUC {res['lira_all_auc']:.3f}",
            flush=True,
        )
    return out
