"""Memorization and fairness (Pepin et al., "When can memorization improve fairness?") on a 3-class table with a group.

The paper's results (zero-bias sets as linear programs, bounds on the memorized mass, the equalized-odds condition)
are in ``pepin`` and checked here through ``fairness_lp`` (``run_seed``'s ``zero_bias``). This module also keeps a
derived check: conditional-probability identities, exact by construction (probability algebra, not one of the
paper's results). Memorization of a set D: f_D(x) = y on D, f(x) elsewhere (the lookup memorizer). Conditioning on
D gives, exactly, with m_a = P(D | A=a), q_{c|a} = P(Y=c | D, A=a), r_{c|a} = P(f=c | D^c, A=a),
m_{y,a} = P(D | Y=y, A=a) and pi_{c|y,a} = P(f=c | Y=y, A=a, D^c):
  * statistical parity   P(f_D=c | A=a) = m_a q_{c|a} + (1 - m_a) r_{c|a};
  * confusion (TPR on the diagonal)   P(f_D=c | Y=y, A=a) = m_{y,a} [c=y] + (1 - m_{y,a}) pi_{c|y,a};
  * FPR   P(f_D=c | Y!=c, A=a) = sum_{y!=c} P(Y=y | A=a) (1 - m_{y,a}) pi_{c|y,a} / P(Y!=c | A=a).
Every rate here is over a finite population (the training set: memorization is of training points), so the forms hold
to float64 round-off. Pruning D is predicted by the same conditioning with D "un-memorized": each point of D is
assumed to behave like the unmemorized points of its own (y, a) cell, P(f'=c | Y=y, A=a) = pi_{c|y,a} (an
approximation: D is usually harder than its cell).
Minimal memorized mass that equalises class c's TPR between groups (t_a < t_b): memorizing misclassified (Y=c, A=a)
points needs P(Y=c, A=a) (t_b - t_a), nothing can do it with less; memorizing uniformly inside the cell needs
P(Y=c, A=a) (t_b - t_a) / (1 - t_a).
"""

import jax
import jax.numpy as jnp
import numpy as np

from gdc import scoring
from gdc.studies.classify import common
from gdc.studies.classify.config import FairnessConfig
from gdc.theory import sgd

CLASS_PRIORS = np.array([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])  # P(Y | A=0), P(Y | A=1)


def group_table(n: int, num_features: int, minority_share: float, minority_noise: float, seed: int) -> dict:
    """3 Gaussian classes, group A ~ Bernoulli(minority_share) with its own class priors and noisier features;
    A is the last feature. Returns x float32 [n, D], y int32, a int32."""
    means = np.random.default_rng([seed, 98]).normal(size=(3, num_features - 1))
    means *= 2.0 / np.linalg.norm(means, axis=1, keepdims=True)
    rng = np.random.default_rng([seed, n, 2])
    a = (rng.random(n) < minority_share).astype(np.int32)
    u = rng.random(n)
    y = (u[:, None] > np.cumsum(CLASS_PRIORS[a], axis=1)).sum(axis=1).astype(np.int32)
    noise = np.where(a == 1, minority_noise, 1.0)[:, None]
    x = np.concatenate([means[y] + noise * rng.normal(size=(n, num_features - 1)), a[:, None]], axis=1)
    return {"x": x.astype(np.float32), "y": y, "a": a}


def _cond(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den = 0 (such terms always carry a zero coefficient)."""
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def rates(pred_N, y_N, a_N, num_classes: int = 3, num_groups: int = 2) -> dict[str, np.ndarray]:
    """Measured rates (float64): sp_AxK P(f=c|a), conf_AxYxK P(f=c|y,a), tpr_AxK, fpr_AxK P(f=c|Y!=c,a)."""
    pred_N, y_N, a_N = (np.asarray(v) for v in (pred_N, y_N, a_N))
    count_AxYxK = np.zeros((num_groups, num_classes, num_classes))
    np.add.at(count_AxYxK, (a_N, y_N, pred_N), 1.0)
    cell_AxY = count_AxYxK.sum(axis=2)
    conf = _cond(count_AxYxK, cell_AxY[:, :, None])
    sp = _cond(count_AxYxK.sum(axis=1), cell_AxY.sum(axis=1)[:, None])
    off_AxYxK = count_AxYxK * (1.0 - np.eye(num_classes))[None]
    neg_AxK = cell_AxY.sum(axis=1)[:, None] - cell_AxY
    fpr = _cond(off_AxYxK.sum(axis=1), neg_AxK)
    return {"sp_AxK": sp, "conf_AxYxK": conf, "tpr_AxK": np.einsum("ayy->ay", conf), "fpr_AxK": fpr}


def lookup(pred_N, y_N, in_D_N) -> np.ndarray:
    """The lookup memorizer: the label on D, the base prediction elsewhere."""
    return np.where(np.asarray(in_D_N, bool), np.asarray(y_N), np.asarray(pred_N))


def predicted_rates(
    pred_N, y_N, a_N, in_D_N, num_classes: int = 3, num_groups: int = 2, *, memorized: bool = True
) -> dict[str, np.ndarray]:
    """The closed forms: rates of f_D (``memorized``) or of f with D un-memorized, from D's composition and the base
    predictions on D^c only (float64; same keys as ``rates``)."""
    pred_N, y_N, a_N = (np.asarray(v) for v in (pred_N, y_N, a_N))
    d_N = np.asarray(in_D_N, bool)
    k, g = num_classes, num_groups
    n_AxY = np.zeros((g, k))
    np.add.at(n_AxY, (a_N, y_N), 1.0)
    nd_AxY = np.zeros((g, k))
    np.add.at(nd_AxY, (a_N[d_N], y_N[d_N]), 1.0)
    out_AxYxK = np.zeros((g, k, k))  # base predictions on D^c
    np.add.at(out_AxYxK, (a_N[~d_N], y_N[~d_N], pred_N[~d_N]), 1.0)
    m_AxY = _cond(nd_AxY, n_AxY)  # P(D | y, a)
    pi = _cond(out_AxYxK, out_AxYxK.sum(axis=2)[:, :, None])  # P(f=c | y, a, D^c)
    p_y_AxY = _cond(n_AxY, n_AxY.sum(axis=1)[:, None])  # P(Y=y | a)
    eye = np.eye(k)[None]
    if memorized:
        m_A = _cond(nd_AxY.sum(axis=1), n_AxY.sum(axis=1))
        q_AxK = _cond(nd_AxY, nd_AxY.sum(axis=1)[:, None])  # P(Y=c | D, a)
        r_AxK = _cond(out_AxYxK.sum(axis=1), out_AxYxK.sum(axis=(1, 2))[:, None])  # P(f=c | D^c, a)
        sp = m_A[:, None] * q_AxK + (1.0 - m_A[:, None]) * r_AxK
        conf = m_AxY[:, :, None] * eye + (1.0 - m_AxY[:, :, None]) * pi
    else:
        conf = pi
        sp = np.einsum("ay,ayc->ac", p_y_AxY, pi)
    w_AxYxK = p_y_AxY[:, :, None] * (1.0 - eye)  # P(Y=y | a) for y != c
    fpr = _cond((w_AxYxK * conf).sum(axis=1), w_AxYxK.sum(axis=1))
    return {"sp_AxK": sp, "conf_AxYxK": conf, "tpr_AxK": np.einsum("ayy->ay", conf), "fpr_AxK": fpr}


def gaps(r: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Group 0 minus group 1, per class: sp, tpr, fpr."""
    return {name: r[f"{name}_AxK"][0] - r[f"{name}_AxK"][1] for name in ("sp", "tpr", "fpr")}


def max_abs_diff(r1: dict, r2: dict) -> float:
    return float(max(np.abs(r1[k] - r2[k]).max() for k in ("sp_AxK", "conf_AxYxK", "fpr_AxK")))


def minimal_mass(pred_N, y_N, a_N, c: int, seed: int = 0) -> dict:
    """Minimal memorized masses equalising class c's TPR, and a realising set of misclassified points.

    Returns disadvantaged group, t_low, t_high, mass_misclassified, mass_uniform, in_D_N (the ceil(n_ca (t_b - t_a))
    misclassified (Y=c, A=a) points, seeded choice) and its mass.
    """
    pred_N, y_N, a_N = (np.asarray(v) for v in (pred_N, y_N, a_N))
    t = rates(pred_N, y_N, a_N)["tpr_AxK"][:, c]
    low = int(np.argmin(t))
    t_a, t_b = float(t[low]), float(t[1 - low])
    cell_N = (y_N == c) & (a_N == low)
    p_cell = cell_N.mean()
    need = int(np.ceil(cell_N.sum() * (t_b - t_a) - 1e-9))
    wrong = np.flatnonzero(cell_N & (pred_N != c))
    in_D_N = np.zeros(len(y_N), bool)
    in_D_N[np.random.default_rng(seed).permutation(wrong)[:need]] = True
    return {
        "class": c,
        "group": low,
        "t_low": t_a,
        "t_high": t_b,
        "mass_misclassified": float(p_cell * (t_b - t_a)),
        "mass_uniform": float(p_cell * (t_b - t_a) / (1.0 - t_a)),
        "in_D_N": in_D_N,
        "realised_mass": float(in_D_N.mean()),
    }


def _predict(net, theta_P, x) -> np.ndarray:
    common.check_finite("MLP parameters", theta_P)
    return np.asarray(jnp.argmax(net.logits_fn(theta_P, jnp.asarray(x)), axis=-1))


def _summary(r: dict) -> dict:
    return {k: v.tolist() for k, v in gaps(r).items()}


def _memorize(net, theta_P, data, in_D_N, key, cfg: FairnessConfig) -> tuple[jax.Array, int, float]:
    """Fine-tunes on the whole set with D up-weighted until D is fit (or max_rounds); (theta, rounds, acc on D)."""
    w_N = jnp.asarray(np.where(in_D_N, cfg.upweight, 1.0), jnp.float32)
    run = sgd.jit_train(net.loss_fn, lr=cfg.lr, epochs=cfg.finetune_epochs, batch_size=cfg.batch_size, normalize=True)
    acc = 0.0
    for r in range(cfg.max_rounds):
        theta_P = run(theta_P, data, jax.random.fold_in(key, r), w_N)["theta_P"]
        acc = float((_predict(net, theta_P, data["x"])[in_D_N] == np.asarray(data["y"])[in_D_N]).mean())
        if acc == 1.0:
            break
    return theta_P, r + 1, acc


def _zero_bias(net, theta_P, data, tr, pred_f, key, cfg: FairnessConfig, seed: int) -> dict:
    """Pepin et al.'s zero-bias sets on this table (``fairness_lp``); the least sets also memorized by fine-tuning."""
    from gdc.studies.classify import fairness_lp  # it reads this module's rates

    def memorize(in_D_N):
        theta_m, _, acc_d = _memorize(net, theta_P, data, in_D_N, jax.random.fold_in(key, 3), cfg)
        return _predict(net, theta_m, tr["x"]), acc_d

    out = {"synthetic": fairness_lp.table_section(pred_f, tr["y"], tr["a"], 3, seed, memorize)}
    for k in cfg.real_table_classes:
        out[f"diabetes_{k}"] = fairness_lp.real_table_section(k, seed, cfg.bootstrap)
    return out


def _compare(pred_rates: dict, meas: dict, base: dict) -> dict:
    g_pred, g_meas, g_base = gaps(pred_rates), gaps(meas), gaps(base)
    out = {}
    for name in ("sp", "tpr", "fpr"):
        out[f"{name}_gap_change_predicted"] = (g_pred[name] - g_base[name]).tolist()
        out[f"{name}_gap_change_measured"] = (g_meas[name] - g_base[name]).tolist()
        out[f"{name}_gap_abs_error"] = float(np.abs(g_pred[name] - g_meas[name]).max())
    out["rate_max_abs_error"] = max_abs_diff(pred_rates, meas)
    return out


def run_seed(cfg: FairnessConfig, seed: int) -> dict:
    tr = group_table(cfg.num_train, cfg.num_features, cfg.minority_share, cfg.minority_noise, seed)
    te = group_table(2 * cfg.num_train, cfg.num_features, cfg.minority_share, cfg.minority_noise, seed + 10_000)
    net = common.mlp(cfg.num_features, 3, cfg.width, 1, seed)
    key = jax.random.key(seed)
    pr = common.probe(
        net,
        tr,
        key,
        lr=cfg.lr,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        early_epochs=cfg.early_epochs,
        eps=cfg.eps,
    )
    data = {"x": jnp.asarray(tr["x"]), "y": jnp.asarray(tr["y"])}
    y, a = tr["y"], tr["a"]
    pred_f = _predict(net, pr["theta_P"], tr["x"])
    base = rates(pred_f, y, a)
    base_test = rates(_predict(net, pr["theta_P"], te["x"]), te["y"], te["a"])
    out = {
        "seed": seed,
        "train_accuracy": float((pred_f == y).mean()),
        "train_accuracy_by_group": [float((pred_f == y)[a == g].mean()) for g in (0, 1)],
        "base_gaps": _summary(base),
        "base_test_gaps": _summary(base_test),
        "quadrant_counts": pr["quadrant_info"]["counts"],
        "quadrants": {},
    }
    retrain = sgd.jit_train(net.loss_fn, lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size, normalize=True)
    for q in cfg.quadrants:
        in_D_N = pr["quadrant_N"] == scoring.QUADRANT_NAMES.index(q)
        res = {
            "size": int(in_D_N.sum()),
            "mass": float(in_D_N.mean()),
            "by_group": [int((in_D_N & (a == g)).sum()) for g in (0, 1)],
            "base_accuracy_on_D": float((pred_f == y)[in_D_N].mean()) if in_D_N.any() else float("nan"),
        }
        if not in_D_N.any():
            out["quadrants"][q] = res
            continue
        pred_mem_rates = predicted_rates(pred_f, y, a, in_D_N)
        res["lookup"] = {"identity_max_abs_error": max_abs_diff(pred_mem_rates, rates(lookup(pred_f, y, in_D_N), y, a))}
        theta_m, rounds, acc_d = _memorize(net, pr["theta_P"], data, in_D_N, jax.random.fold_in(key, 1), cfg)
        pred_m = _predict(net, theta_m, tr["x"])
        res["memorize"] = {
            "rounds": rounds,
            "accuracy_on_D": acc_d,
            "drift_off_D": float((pred_m != pred_f)[~in_D_N].mean()),
            **_compare(pred_mem_rates, rates(pred_m, y, a), base),
            "test_gaps": _summary(rates(_predict(net, theta_m, te["x"]), te["y"], te["a"])),
        }
        theta_p = retrain(net.theta0_P, data, key, jnp.asarray(~in_D_N, jnp.float32))["theta_P"]
        pred_p = _predict(net, theta_p, tr["x"])
        res["prune"] = {
            "accuracy_on_D": float((pred_p == y)[in_D_N].mean()),
            "drift_off_D": float((pred_p != pred_f)[~in_D_N].mean()),
            **_compare(predicted_rates(pred_f, y, a, in_D_N, memorized=False), rates(pred_p, y, a), base),
            "test_gaps": _summary(rates(_predict(net, theta_p, te["x"]), te["y"], te["a"])),
        }
        out["quadrants"][q] = res
    out["zero_bias"] = _zero_bias(net, pr["theta_P"], data, tr, pred_f, key, cfg, seed)
    c = int(np.argmax(np.abs(gaps(base)["tpr"])))
    mm = minimal_mass(pred_f, y, a, c, seed)
    in_D_N = mm.pop("in_D_N")
    after = rates(lookup(pred_f, y, in_D_N), y, a)["tpr_AxK"][:, c]
    theta_m, rounds, acc_d = _memorize(net, pr["theta_P"], data, in_D_N, jax.random.fold_in(key, 2), cfg)
    measured = rates(_predict(net, theta_m, tr["x"]), y, a)["tpr_AxK"][:, c]
    out["minimal_mass"] = {
        **mm,
        "size": int(in_D_N.sum()),
        "tpr_gap_before": float(mm["t_high"] - mm["t_low"]),
        "tpr_gap_after_lookup": float(abs(after[0] - after[1])),
        "tpr_gap_after_finetune": float(abs(measured[0] - measured[1])),
        "finetune_rounds": rounds,
        "finetune_accuracy_on_D": acc_d,
    }
    return out
