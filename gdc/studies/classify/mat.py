"""MAT, memorization-aware training (Bayat et al., ICLR 2025), on the paper's interpretable toy.

Pieces (the paper's Algorithm 1 and the public toy's ``run_mat`` / ``get_shift``, re-derived here):
  * XRM held-out predictions: two bias-free linear models, each example held in by one of them (a fair coin), trained
    by full-batch GD on the mean cross-entropy of the held-in logits against the dynamic labels. After each step
    every label is replaced by the held-out model's argmax with probability (p_max - 1/C) C / (C - 1), computed from
    that step's (pre-update) held-out softmax. f_ho is the last step's held-out logits.
  * Calibrated held-out probability: p(yh | x) = softmax(f_ho(x) / tau); p(y, yh) = mean_i p(yh | x_i) [y_i = y];
    p(y | yh) = p(y, yh) / sum_y' p(y', yh); p_ho(y | x) = sum_yh p(yh | x) p(y | yh).
  * MAT training: full-batch GD on CE(softmax(f(x) + log(p_ho(. | x) + 1e-6)), y); prediction uses f alone.
    Reported at the final step (as the public toy does) and at the step of best worst-group accuracy on a validation
    split (50% majority, true groups: the paper's early stopping); ERM gets the same two numbers.
  * Scorer: 1 - p_ho(y_i | x_i), beside GenDataCarto's d_i and m_i (``p_ho_score``).

The toy: y ~ Bernoulli(1/2); core x_1 = (0.12 g - 1)(2y - 1), spurious x_2 likewise, sign-flipped on a
(1 - majority) share of rows, and scaled by 5; (dim - 2) N(0, noise_std^2) example-specific dimensions.
Majority rows are those with x_1 x_2 > 0 (the spurious feature agrees with the core one).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from gdc import scoring
from gdc.studies.classify import common
from gdc.studies.classify.config import MatConfig

SHIFT_EPS = 1e-6  # added inside the log, as in the public get_shift


def toy_data(n: int, dim: int, majority: float, noise_std: float, seed: int) -> dict[str, np.ndarray]:
    """x float32 [n, dim], y int32 [n], majority bool [n] (spurious feature agrees with the label)."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.5).astype(np.int32)
    sign = (2 * y - 1).astype(np.float64)
    x1 = (rng.normal(size=n) * 0.12 - 1.0) * sign
    x2 = (rng.normal(size=n) * 0.12 - 1.0) * sign
    x2[rng.permutation(n)[: round((1.0 - majority) * n)]] *= -1.0
    x = np.concatenate([x1[:, None], 5.0 * x2[:, None], noise_std * rng.normal(size=(n, dim - 2))], axis=1)
    return {"x": x.astype(np.float32), "y": y, "majority": x1 * x2 > 0}


def flip_probability(p_max_N: jax.Array, num_classes: int) -> jax.Array:
    """XRM's label-flip probability (p_max - 1/C) C / (C - 1): 0 at a uniform prediction, 1 at a confident one."""
    return (p_max_N - 1.0 / num_classes) * num_classes / (num_classes - 1)


def calibrated_p_ho(f_ho_NxK: jax.Array, y_N: jax.Array, temperature: float) -> jax.Array:
    """p_ho(y | x_i) ``[N, K]`` (rows sum to 1) from held-out logits, calibrated on the training labels."""
    k = f_ho_NxK.shape[1]
    p_yh_NxK = jax.nn.softmax(f_ho_NxK / temperature, axis=1)
    joint_KxK = p_yh_NxK.T @ jax.nn.one_hot(y_N, k, dtype=p_yh_NxK.dtype) / y_N.shape[0]  # [yh, y]
    cond_KxK = joint_KxK / joint_KxK.sum(axis=1, keepdims=True)  # p(y | yh)
    return p_yh_NxK @ cond_KxK


def logit_shift(f_ho_NxK: jax.Array, y_N: jax.Array, temperature: float) -> jax.Array:
    """MAT's additive logit shift log(p_ho(. | x) + 1e-6), ``[N, K]``."""
    return jnp.log(calibrated_p_ho(f_ho_NxK, y_N, temperature) + SHIFT_EPS)


def p_ho_score(f_ho_NxK: jax.Array, y_N: jax.Array, temperature: float) -> np.ndarray:
    """The held-out memorization score 1 - p_ho(y_i | x_i), float64 ``[N]``: high when a model that never saw
    example i does not explain its label, so fitting it needs example-specific (memorized) features."""
    p_NxK = np.asarray(calibrated_p_ho(f_ho_NxK, y_N, temperature), np.float64)
    return 1.0 - p_NxK[np.arange(len(y_N)), np.asarray(y_N)]


def _ce_N(logits_NxK: jax.Array, y_N: jax.Array) -> jax.Array:
    return -jnp.take_along_axis(jax.nn.log_softmax(logits_NxK, axis=1), y_N[:, None], axis=1)[:, 0]


def _group_acc(logits_NxK: jax.Array, y_N: jax.Array, majority_N: jax.Array) -> jax.Array:
    """[majority accuracy, minority accuracy]."""
    correct_N = (jnp.argmax(logits_NxK, axis=1) == y_N).astype(jnp.float32)
    maj_N = majority_N.astype(jnp.float32)
    return jnp.stack([(correct_N * maj_N).sum() / maj_N.sum(), (correct_N * (1 - maj_N)).sum() / (1 - maj_N).sum()])


def init_linear(key: jax.Array, dim: int, num_classes: int = 2) -> jax.Array:
    """Bias-free linear weights ``[D, K]``, uniform in +-1/sqrt(D) (PyTorch's nn.Linear default)."""
    bound = 1.0 / np.sqrt(dim)
    return jax.random.uniform(key, (dim, num_classes), jnp.float32, -bound, bound)


@functools.partial(jax.jit, static_argnames=("epochs",))
def train_linear(w0_DxK, train, val, test, shift_NxK, *, lr: float, epochs: int) -> dict:
    """Full-batch GD on mean CE(x W + shift, y); per-epoch pre-update per-example losses and group accuracies.

    Returns:
      w_DxK, loss_ExN (each example's shifted loss before each step), acc_tr_Ex2, acc_va_Ex2 and acc_te_Ex2
      ([majority, minority] accuracy of x W, without the shift, before each step).
    """

    def step(w_DxK, _):
        def objective(w):
            loss_N = _ce_N(train["x"] @ w + shift_NxK, train["y"])
            return loss_N.mean(), loss_N

        (_, loss_N), g_DxK = jax.value_and_grad(objective, has_aux=True)(w_DxK)
        acc_tr = _group_acc(train["x"] @ w_DxK, train["y"], train["majority"])
        acc_va = _group_acc(val["x"] @ w_DxK, val["y"], val["majority"])
        acc_te = _group_acc(test["x"] @ w_DxK, test["y"], test["majority"])
        return w_DxK - lr * g_DxK, (loss_N, acc_tr, acc_va, acc_te)

    w_DxK, (loss_ExN, acc_tr, acc_va, acc_te) = jax.lax.scan(step, w0_DxK, None, length=epochs)
    return {"w_DxK": w_DxK, "loss_ExN": loss_ExN, "acc_tr_Ex2": acc_tr, "acc_va_Ex2": acc_va, "acc_te_Ex2": acc_te}


@functools.partial(jax.jit, static_argnames=("epochs",))
def xrm(wa_DxK, wb_DxK, train, key, *, lr: float, epochs: int) -> dict:
    """XRM with label flipping; returns f_ho_NxK (last step's held-out logits), hold_a_N and the final labels."""
    x_NxD, y_N = train["x"], train["y"]
    k = wa_DxK.shape[1]
    key_split, key_flip = jax.random.split(key)
    hold_a_N = jax.random.bernoulli(key_split, 0.5, y_N.shape).astype(jnp.float32)[:, None]  # held in by model a

    def step(carry, t):
        wa, wb, y_dyn_N, _ = carry

        def objective(params):
            a, b = x_NxD @ params[0], x_NxD @ params[1]
            return _ce_N(a * hold_a_N + b * (1 - hold_a_N), y_dyn_N).mean()

        ga, gb = jax.grad(objective)((wa, wb))
        ho_NxK = (x_NxD @ wa) * (1 - hold_a_N) + (x_NxD @ wb) * hold_a_N
        p_NxK = jax.nn.softmax(ho_NxK, axis=1)
        flip_N = jax.random.bernoulli(jax.random.fold_in(key_flip, t), flip_probability(p_NxK.max(axis=1), k))
        y_dyn_N = jnp.where(flip_N, jnp.argmax(p_NxK, axis=1), y_dyn_N).astype(y_N.dtype)
        return (wa - lr * ga, wb - lr * gb, y_dyn_N, ho_NxK), None

    init = (wa_DxK, wb_DxK, y_N, jnp.zeros((y_N.shape[0], k), jnp.float32))
    (wa, wb, y_dyn_N, f_ho_NxK), _ = jax.lax.scan(step, init, jnp.arange(epochs))
    return {"f_ho_NxK": f_ho_NxK, "hold_a_N": hold_a_N[:, 0] > 0, "y_dyn_N": y_dyn_N}


def _acc_dict(res: dict, train, test) -> dict:
    """Final-epoch accuracies, and test accuracy at the epoch of best worst-group validation accuracy."""
    acc_tr_Ex2, acc_te_Ex2, w_DxK = np.asarray(res["acc_tr_Ex2"]), np.asarray(res["acc_te_Ex2"]), res["w_DxK"]
    common.check_finite("linear model weights", w_DxK)
    best = int(np.argmax(np.asarray(res["acc_va_Ex2"]).min(axis=1)))  # first epoch with the best worst group
    final_tr = np.asarray(_group_acc(train["x"] @ w_DxK, train["y"], train["majority"]))
    final_te = np.asarray(_group_acc(test["x"] @ w_DxK, test["y"], test["majority"]))
    every = max(1, acc_te_Ex2.shape[0] // 100)
    return {
        "train_majority": float(final_tr[0]),
        "train_minority": float(final_tr[1]),
        "test_majority": float(final_te[0]),
        "test_minority": float(final_te[1]),
        "early_stop_epoch": best,
        "early_stop_test_majority": float(acc_te_Ex2[best, 0]),
        "early_stop_test_minority": float(acc_te_Ex2[best, 1]),
        "curve_epochs": list(range(0, acc_te_Ex2.shape[0], every)),
        "curve_test_minority": np.asarray(acc_te_Ex2[::every, 1]).tolist(),
        "curve_train_minority": np.asarray(acc_tr_Ex2[::every, 1]).tolist(),
    }


def run_seed(cfg: MatConfig, seed: int) -> dict:
    """ERM without noise, ERM with noise, XRM + MAT with noise; scorer AUROCs for the minority rows."""
    n, dim = cfg.num_examples, cfg.dim
    key = jax.random.key(seed)
    k_erm, k_a, k_b, k_mat, k_xrm = jax.random.split(key, 5)
    out: dict = {"seed": seed}
    zero_shift = jnp.zeros((n, 2), jnp.float32)
    for name, noise in (("erm_no_noise", 0.0), ("erm", cfg.noise_std)):
        tr = toy_data(n, dim, cfg.majority_train, noise, 3 * seed)
        va = toy_data(n, dim, 0.5, noise, 3 * seed + 1)
        te = toy_data(n, dim, 0.5, noise, 3 * seed + 2)
        train, val, test = (jax.tree.map(jnp.asarray, s) for s in (tr, va, te))
        res = train_linear(init_linear(k_erm, dim), train, val, test, zero_shift, lr=cfg.lr, epochs=cfg.epochs)
        out[name] = _acc_dict(res, train, test)
    loss_ExN = np.asarray(res["loss_ExN"])  # the noisy ERM run: GenDataCarto's axes
    minority_N = ~tr["majority"]
    d_N = scoring.difficulty(loss_ExN, cfg.early_epochs)
    ev = scoring.forget_events(loss_ExN, cfg.eps)
    m_N = scoring.memorization(ev["forget_N"], ev["transitions"], ev["ever_learned_N"])["m_N"]

    hold = xrm(init_linear(k_a, dim), init_linear(k_b, dim), train, k_xrm, lr=cfg.lr, epochs=cfg.epochs)
    shift_NxK = logit_shift(hold["f_ho_NxK"], train["y"], cfg.temperature)
    res = train_linear(init_linear(k_mat, dim), train, val, test, shift_NxK, lr=cfg.lr, epochs=cfg.epochs)
    out["mat"] = _acc_dict(res, train, test)
    score_N = p_ho_score(hold["f_ho_NxK"], train["y"], cfg.temperature)
    inferred_minority_N = np.asarray(jnp.argmax(hold["f_ho_NxK"], axis=1) != train["y"])
    out["scores"] = {
        "auroc_minority_d": common.auroc(d_N, minority_N),
        "auroc_minority_m": common.auroc(m_N, minority_N),
        "auroc_minority_1_minus_p_ho": common.auroc(score_N, minority_N),
        "inferred_group_agreement": float((inferred_minority_N == minority_N).mean()),
        "forget_events_total": int(ev["forget_N"].sum()),
        "label_flips": int((np.asarray(hold["y_dyn_N"]) != tr["y"]).sum()),
        "mean_p_ho_minority": float(1.0 - score_N[minority_N].mean()),
        "mean_p_ho_majority": float(1.0 - score_N[~minority_N].mean()),
    }
    out["_arrays"] = {"d_N": d_N, "m_N": m_N, "score_N": score_N, "minority_N": minority_N}
    return out
