"""gdc.theory: the SGD harness against a hand loop, the stability scaling target, bound statistics, config errors and
the verify mode end to end."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gdc import scoring
from gdc import tracker as tracker_lib
from gdc.errors import ConfigError
from gdc.theory import config as theory_config
from gdc.theory import convex, sgd, stability, stats


# ------------------------------------------------------------------------------------------------------------------
# The SGD harness.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", [False, True])
def test_sgd_matches_hand_loop(normalize):
    with jax.enable_x64(True):
        train, _ = convex.teacher_data(6, 2, 3, 2, 0.0, seed=0)
        batch = convex.model_batch(train)
        lf = convex.loss_fn(2)
        w_N = jnp.asarray([1.0, 0.5, 0.0, 1.0, 2.0, 1.0])
        key = jax.random.key(3)
        got = sgd.train(lf, jnp.zeros(4), batch, key, w_N, lr=0.3, epochs=2, batch_size=2, l2=0.1, normalize=normalize)
        theta = jnp.zeros(4)
        for epoch in range(2):
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), 6))
            for s in range(3):
                idx = perm[2 * s : 2 * s + 2]
                w = w_N[idx]
                denom = w.sum() if normalize else 2.0

                def obj(t, idx=idx, w=w, denom=denom):
                    return (w * lf(t, jax.tree.map(lambda a: a[idx], batch))).sum() / denom

                theta = theta - 0.3 * (jax.grad(obj)(theta) + 0.1 * theta)
        np.testing.assert_allclose(got["theta_P"], theta, rtol=1e-12)


def test_sgd_tracker_counts_match_offline_state_machine():
    with jax.enable_x64(True):
        train, _ = convex.teacher_data(40, 2, 4, 2, 0.1, seed=1)
        cfg = tracker_lib.TrackerConfig(eps_low=0.4, eps_high=0.5)
        out = sgd.jit_train(
            convex.loss_fn(2), lr=0.5, epochs=8, batch_size=4, checkpoints_per_epoch=2, tracker_cfg=cfg
        )(jnp.zeros(5), convex.model_batch(train), jax.random.key(0), None)
    fields = tracker_lib.to_numpy(out["tracker"])
    loss_ExN = np.asarray(out["loss_ExN"], np.float32)
    assert loss_ExN.shape == (16, 40) and out["thetas_ExP"].shape == (16, 5)
    ev = scoring.forget_events(loss_ExN, 0.4, 0.5)
    np.testing.assert_array_equal(fields["forget_N"], ev["forget_N"])
    np.testing.assert_array_equal(fields["learn_N"], ev["learn_N"])
    np.testing.assert_array_equal(fields["seen_N"], np.full(40, 16))
    assert ev["forget_N"].sum() > 0  # the check is not vacuous


# ------------------------------------------------------------------------------------------------------------------
# Stability: the numeric target.
# ------------------------------------------------------------------------------------------------------------------
def test_divergence_ratio_at_half_weight():
    """Issue 5: replace-one divergence ratio for alpha = 0.5 is 0.5 +- 0.05 on the convex model, under the HRS bound."""
    cfg = theory_config.TheoryConfig(num_train=100, num_features=10, epochs=10, stability_examples=5, alphas=(1.0, 0.5))
    with jax.enable_x64(True):
        probe = convex.probe(2, 0.05, cfg, 0)
        res = stability.scaling(probe, 2, cfg, 0)
    assert abs(res["ratio_half_mean"] - 0.5) <= 0.05
    assert 0.45 <= res["ratio_half_min"] <= res["ratio_half_max"] <= 0.55
    assert res["lr_ok"] and res["bound_ok"]
    assert min(d[0] for d in res["divergence_IxA"]) > 0  # a replaced example does move the parameters


def test_hotspots_are_the_top_m():
    loss_ExN = np.array([[0.1, 0.9, 0.1, 0.1], [0.9, 0.1, 0.9, 0.1], [0.1, 0.9, 0.1, 0.1], [0.9, 0.1, 0.1, 0.1]])
    m_N = scoring.forget_events(loss_ExN, 0.5)["forget_N"] / 3
    ids = stability.hotspots({"loss_ExN": loss_ExN, "m_N": m_N}, 2)
    np.testing.assert_array_equal(m_N * 3, [2, 1, 1, 0])
    assert ids[0] == 0 and ids[1] in (1, 2)  # 1 and 2 tie on m and on upward variation: a seeded draw


# ------------------------------------------------------------------------------------------------------------------
# Bound statistics and verdicts.
# ------------------------------------------------------------------------------------------------------------------
def test_bound_stats_hand_values():
    m_N = np.array([0.0, 0.1, 0.2, 0.4])
    infl_N = np.array([1.0, 1.0, 2.0, 1.0])
    s = stats.bound_stats(m_N, infl_N, bound_c=1.5, max_violation=0.3)
    assert s["c_min"] == pytest.approx(0.4)  # max m / |I| over m > 0
    # scaled: m / 0.175 against |I| / 1.25; example 3: (0.4 / 0.175) / (1 / 1.25) = 2.857 > 1.5, the others are below.
    assert s["c_min_scaled"] == pytest.approx((0.4 / 0.175) / (1 / 1.25))
    assert s["violation"] == pytest.approx(0.25)
    assert s["frac_pos"] == 0.75
    zero = stats.bound_stats(np.zeros(4), infl_N, bound_c=1.5, max_violation=0.3)
    assert zero["c_min"] == 0.0 and not zero["holds"] and np.isnan(zero["spearman"])
    perfect = stats.bound_stats(np.arange(1.0, 41.0), np.arange(1.0, 41.0), bound_c=1.5, max_violation=0.0)
    assert perfect["holds"] and perfect["spearman"] == pytest.approx(1.0)


def test_sweep_and_verdicts():
    rng = np.random.default_rng(0)
    loss_ExN = rng.uniform(0, 1, size=(10, 50)).astype(np.float32)
    infl_N = rng.uniform(0.1, 1, size=50)
    rows = stats.sweep(
        loss_ExN,
        {"a": infl_N},
        stats.settings_for((0.3, 0.6), (50.0,), 1.25),
        bound_c=2.0,
        max_violation=0.05,
    )
    assert [(r["kind"], r["value"], r["hysteresis"]) for r in rows] == [
        ("absolute", 0.3, 1.0),
        ("absolute", 0.6, 1.0),
        ("percentile", 50.0, 1.0),
        ("absolute", 0.3, 1.25),
        ("absolute", 0.6, 1.25),
        ("percentile", 50.0, 1.25),
    ]
    m = stats.memorization_at(loss_ExN, "absolute", 0.3, 1.25)
    ev = scoring.forget_events(loss_ExN, 0.3 / 1.25, 0.3 * 1.25)
    np.testing.assert_allclose(m["m_N"], ev["forget_N"] / 9)
    fake = [{"a": {"holds": h}} for h in (True, False)]
    assert stats.sweep_verdict(fake, "a") == "holds only for some eps"
    assert stats.sweep_verdict(fake[:1], "a") == "holds"
    assert stats.sweep_verdict(fake[1:], "a") == "fails"
    assert stats.combine(["holds", "holds"]) == "holds"
    assert stats.combine(["fails", "fails"]) == "fails"
    assert stats.combine(["holds", "fails"]) == "holds only for some eps"


# ------------------------------------------------------------------------------------------------------------------
# Config.
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "theory, field",
    [
        ({"claims": ("nope",)}, "theory.claims"),
        ({"num_train": 0}, "theory.num_train"),
        ({"hysteresis": 0.5}, "theory.hysteresis"),
        ({"alphas": (1.0, 0.25)}, "theory.alphas"),
        ({"batch_size": 3}, "theory.batch_size"),
        ({"lds_test": (5,)}, "theory.lds_test"),
        ({"bogus": 1}, "theory.bogus"),
        ({"eps_percentile": 5.0}, "theory.eps_percentile"),
    ],
)
def test_bad_theory_config_names_the_field(theory, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        theory_config.from_mapping({"seed": 0, "theory": theory})


def test_verify_configs_load():
    from configs import theory_convex, theory_nonconvex

    for module, claims in ((theory_convex, ("lower_bound", "stability")), (theory_nonconvex, ("nonconvex",))):
        for arg in ("", "quick"):
            seed, cfg = theory_config.from_mapping(module.get_config(arg))
            assert cfg.claims == claims and seed == 0
    with pytest.raises(ConfigError, match="unknown section"):
        theory_config.from_mapping({"seed": 0, "theory": {}, "train": {}})


# ------------------------------------------------------------------------------------------------------------------
# --mode=verify end to end (quick configs).
# ------------------------------------------------------------------------------------------------------------------
def test_verify_quick_convex(tmp_path):
    from configs import theory_convex
    from gdc import theory

    results = theory.run(theory_convex.get_config("quick"), str(tmp_path), command="python launch.py --quick")
    assert set(results) == {"lower_bound", "stability"}
    for name in ("verify.md", "verify.json", "lower_bound.png", "influence_vs_loo.png", "stability.png"):
        assert os.path.getsize(tmp_path / name) > 0
    for r in results.values():
        assert r["verdict"] in stats.VERDICTS
    run = results["lower_bound"]["runs"]["logistic_noise0.05"]
    assert run["tracker_matches_offline"]
    assert run["influence_vs_loo"]["self_spearman"] > 0.9
    text = (tmp_path / "verify.md").read_text()
    assert "## Claim 1" in text and "## Claim 2" in text and "python launch.py --quick" in text
    # A second run of one claim keeps the other's result.
    cfg = theory_convex.get_config("quick")
    cfg.theory.claims = ("stability",)
    theory.run(cfg, str(tmp_path))
    saved = json.loads((tmp_path / "verify.json").read_text())
    assert set(saved) == {"lower_bound", "stability"}


@pytest.mark.slow
def test_verify_quick_nonconvex(tmp_path):
    from configs import theory_nonconvex
    from gdc import theory

    results = theory.run(theory_nonconvex.get_config("quick"), str(tmp_path))
    r = results["nonconvex"]["runs"]["mlp"]
    assert r["solver_vs_exact"]["cg"]["spearman"] > 0.99
    assert set(r["lds"]) == {"cg", "lissa", "grad_dot", "exact_gn", "tracin"}
    assert os.path.getsize(tmp_path / "nonconvex.png") > 0


def test_config_dataclass_roundtrip():
    cfg = theory_config.TheoryConfig()
    seed, back = theory_config.from_mapping({"seed": 3, "theory": dataclasses.asdict(cfg)})
    assert seed == 3 and back == cfg
