"""Pepin et al.'s zero-bias linear programs, mass bounds and equalized-odds condition (gdc.studies.classify.pepin)
against hand-solved tables, brute force over integer sets, and the rates measured on a lookup memorizer."""

import itertools

import numpy as np
import pytest

from gdc.errors import ConfigError
from gdc.studies.classify import config as classify_config
from gdc.studies.classify import fairness, fairness_lp, pepin


def _hand_table():
    """Two groups x two labels, n[a, y, k] (k: base prediction). Group 0: 100 rows, group 1: 50; 150 in all."""
    n = np.zeros((2, 2, 2))
    n[0, 1, 1], n[0, 1, 0], n[0, 0, 0], n[0, 0, 1] = 40, 10, 46, 4  # P(f=1 | A=0) = 44 / 100
    n[1, 1, 1], n[1, 1, 0], n[1, 0, 0], n[1, 0, 1] = 10, 14, 21, 5  # P(f=1 | A=1) = 15 / 50
    return n


def _rows(n_AxYxK):
    """The rows of a counts table: pred, y, a."""
    cells = [
        (a, y, k) for a, y, k in itertools.product(*map(range, n_AxYxK.shape)) for _ in range(int(n_AxYxK[a, y, k]))
    ]
    a, y, k = (np.array(v, np.int64) for v in zip(*cells, strict=True))
    return k, y, a


def test_sp_lp_hand_table():
    n = _hand_table()
    # Gap 0.44 - 0.30 = 0.14. Memorizing a (A=1, Y=1, f=0) row raises group 1's rate by 1/50 (14 such rows), any
    # other row costs the same mass (1/150) for at most 1/100 or moves the gap the wrong way: 7 rows, mass 7/150.
    lp = pepin.zero_bias_lp(n, "sp", classes=[1])
    assert lp["feasible"]
    np.testing.assert_allclose(lp["min_mass"], 7 / 150, atol=1e-9)
    expected = np.zeros_like(n)
    expected[1, 1, 0] = 7
    np.testing.assert_allclose(lp["x_AxYxK"], expected, atol=1e-7)
    # Largest zero-SP set: all 117 correct rows, and of the misclassified ones a - b - 2c + 2d = -14 at most
    # a=10, b=4, c=14, d=4 (32 rows): 149 / 150.
    np.testing.assert_allclose(lp["max_mass"], 149 / 150, atol=1e-9)
    # SP over both classes is the same constraint for two classes.
    np.testing.assert_allclose(pepin.zero_bias_lp(n, "sp")["min_mass"], 7 / 150, atol=1e-9)
    # Composition only: the cheapest cell (A=1, Y=1: 24 rows, 14 wrong) needs m = 0.14 / 0.28 = 1/2: 12 rows.
    comp = pepin.zero_bias_lp(n, "sp", classes=[1], model="composition")
    np.testing.assert_allclose(comp["min_mass"], 12 / 150, atol=1e-9)
    np.testing.assert_allclose(comp["m_AxY"], [[0, 0], [0, 0.5]], atol=1e-9)
    b = pepin.mass_bounds(n, "sp")
    np.testing.assert_allclose([b["lower"], b["upper"]], [0.14 / 3, 0.14 * 2 / 3], atol=1e-12)
    # A lookup memorizer of the LP's set reaches zero SP, measured from its predictions.
    pred, y, a = _rows(n)
    in_D = pepin.realise(pred, y, a, lp["x_AxYxK"], seed=0)
    assert in_D.sum() == 7
    r = fairness.rates(fairness.lookup(pred, y, in_D), y, a, num_classes=2)
    assert abs(r["sp_AxK"][0, 1] - r["sp_AxK"][1, 1]) < 1e-15
    assert abs(fairness.rates(pred, y, a, num_classes=2)["sp_AxK"][:, 1] @ [1, -1] - 0.14) < 1e-12


def test_eo_and_eodds_lp_hand_table():
    n = _hand_table()
    # TPR of class 1: 40/50 against 10/24; 24 (0.8 - 10/24) = 9.2 misclassified group-1 rows; uniform in the cell:
    # 9.2 / (1 - 10/24) rows.
    lp = pepin.zero_bias_lp(n, "eo", classes=[1])
    np.testing.assert_allclose(lp["min_mass"], 9.2 / 150, atol=1e-9)
    comp = pepin.zero_bias_lp(n, "eo", classes=[1], model="composition")
    np.testing.assert_allclose(comp["min_mass"], 9.2 / 150 / (14 / 24), atol=1e-9)
    b = pepin.mass_bounds(n, "eo", classes=[1])
    np.testing.assert_allclose([b["lower"], b["upper"]], [lp["min_mass"], comp["min_mass"]], atol=1e-9)
    # Both classes: class 0 adds 26 (46/50 - 21/26) = 2.92 rows, or 2.92 / (5/26) uniformly. For two classes
    # equalized odds is the same condition (the off-diagonal of row y is 1 - TPR_y).
    for metric in ("eo", "eodds"):
        np.testing.assert_allclose(pepin.zero_bias_lp(n, metric)["min_mass"], 12.12 / 150, atol=1e-9)
        comp = pepin.zero_bias_lp(n, metric, model="composition")["min_mass"]
        np.testing.assert_allclose(comp, (9.2 * 24 / 14 + 2.92 * 26 / 5) / 150, atol=1e-9)
        b = pepin.mass_bounds(n, metric)
        np.testing.assert_allclose([b["lower"], b["upper"]], [12.12 / 150, comp], atol=1e-9)


def _three_class(proportional: bool):
    n = np.zeros((2, 3, 3))
    n[0, 0] = [6, 2, 2]  # off-diagonal (0.2, 0.2)
    n[1, 0] = [8, 1, 1] if proportional else [8, 2, 0]  # (0.1, 0.1): ratio 1/2 | (0.2, 0): not proportional
    n[:, 1] = [0, 10, 0]
    n[:, 2] = [1, 1, 8]
    return n


def test_equalized_odds_condition_holds():
    n = _three_class(proportional=True)
    cond = pepin.equalized_odds_condition(n)
    assert cond["holds"] and cond["proportional_Y"] == [True, True, True]
    np.testing.assert_allclose(cond["rho_Y"][0], 0.5)
    np.testing.assert_allclose(cond["m_YxA"][0], [0.5, 0.0])  # memorize half of (A=0, Y=0) blindly: 5 of 60 rows
    np.testing.assert_allclose(cond["composition_min_mass"], 5 / 60)
    comp = pepin.zero_bias_lp(n, "eodds", model="composition")
    np.testing.assert_allclose(comp["min_mass"], 5 / 60, atol=1e-9)
    pred, y, a = _rows(n)
    in_D = pepin.realise(pred, y, a, comp["x_AxYxK"], seed=1)  # 3 / 1 / 1 rows of the (A=0, Y=0) cell
    assert fairness_lp.measured_bias(fairness.lookup(pred, y, in_D), y, a, "eodds", 3) < 1e-15
    assert fairness_lp.measured_bias(pred, y, a, "eodds", 3) == pytest.approx(0.2)  # TPR_0: 0.6 vs 0.8
    # Selective: memorize one f=1 and one f=2 row of (A=0, Y=0): 2 / 60.
    np.testing.assert_allclose(pepin.zero_bias_lp(n, "eodds")["min_mass"], 2 / 60, atol=1e-9)


def test_equalized_odds_condition_fails():
    n = _three_class(proportional=False)
    cond = pepin.equalized_odds_condition(n)
    assert not cond["holds"] and cond["proportional_Y"] == [False, True, True]
    # Blind to f, only memorizing both (Y=0) cells whole equalises row 0: 20 of 60 rows.
    np.testing.assert_allclose(cond["composition_min_mass"], 20 / 60)
    comp = pepin.zero_bias_lp(n, "eodds", model="composition")
    np.testing.assert_allclose(comp["min_mass"], 20 / 60, atol=1e-9)
    np.testing.assert_allclose(comp["m_AxY"][:, 0], [1.0, 1.0], atol=1e-9)
    # Knowing f: lower group 0's P(f=2 | Y=0) from 0.2 to 0 with its two (Y=0, f=2) rows: 2 / 60.
    np.testing.assert_allclose(pepin.zero_bias_lp(n, "eodds")["min_mass"], 2 / 60, atol=1e-9)
    np.testing.assert_allclose(pepin.mass_bounds(n, "eodds")["lower"], 2 / 60, atol=1e-12)


def _random_table(rng, k):
    n = rng.integers(0, 12, size=(2, k, k)).astype(float)
    n[:, np.arange(k), np.arange(k)] += rng.integers(1, 30, size=(2, k))  # every (a, y) cell non-empty
    return n


@pytest.mark.parametrize("k", [2, 3])
def test_bounds_bracket_lp_on_random_tables(k):
    rng = np.random.default_rng(k)
    feasible_sp = 0
    for _ in range(15):
        n = _random_table(rng, k)
        for metric in ("eo", "eodds"):
            b = pepin.mass_bounds(n, metric)
            sel = pepin.zero_bias_lp(n, metric, largest=False)
            comp = pepin.zero_bias_lp(n, metric, model="composition", largest=False)
            np.testing.assert_allclose(sel["min_mass"], b["lower"], atol=1e-9)
            np.testing.assert_allclose(comp["min_mass"], b["upper"], atol=1e-9)
        b = pepin.mass_bounds(n, "sp")
        sel = pepin.zero_bias_lp(n, "sp")
        comp = pepin.zero_bias_lp(n, "sp", model="composition", largest=False)
        if not b["feasible"]:
            assert not sel["feasible"]
            continue
        if k == 2:
            assert sel["feasible"]  # the interval condition is sufficient for two classes
        if sel["feasible"]:
            feasible_sp += 1
            assert b["lower"] - 1e-9 <= sel["min_mass"] <= b["upper"] + 1e-9
            assert sel["min_mass"] <= sel["max_mass"] + 1e-9
            np.testing.assert_allclose(pepin.gaps(n, "sp", x_AxYxK=sel["x_AxYxK"]), 0.0, atol=1e-9)
            if comp["feasible"]:
                assert comp["min_mass"] >= sel["min_mass"] - 1e-9
    assert feasible_sp >= 5


def test_lp_below_brute_force_integer_minimum():
    rng = np.random.default_rng(5)
    wrong = [(a, y, 1 - y) for a in range(2) for y in range(2)]  # correct rows never change a rate
    for _ in range(20):
        n = rng.integers(1, 5, size=(2, 2, 2)).astype(float)
        lp = pepin.zero_bias_lp(n, "sp", classes=[1])
        best = None
        for counts in itertools.product(*(range(int(n[c]) + 1) for c in wrong)):
            x = np.zeros_like(n)
            for c, v in zip(wrong, counts, strict=True):
                x[c] = v
            if abs(pepin.gaps(n, "sp", [1], x)[0, 0]) < 1e-12 and (best is None or x.sum() < best):
                best = x.sum()
        if not lp["feasible"]:
            assert best is None
        if best is not None:
            assert lp["feasible"] and lp["min_mass"] <= best / n.sum() + 1e-9


@pytest.mark.parametrize("metric", pepin.METRICS)
def test_linear_rates_match_lookup_memorizer(metric):
    rng = np.random.default_rng(3)
    n_rows = 400
    a = (rng.random(n_rows) < 0.4).astype(np.int64)
    y = rng.integers(3, size=n_rows)
    pred = np.where(rng.random(n_rows) < 0.7 - 0.2 * a, y, rng.integers(3, size=n_rows))
    in_D = rng.random(n_rows) < 0.2
    x = pepin.counts(pred[in_D], y[in_D], a[in_D], 3)
    gap = pepin.gaps(pepin.counts(pred, y, a, 3), metric, x_AxYxK=x)[0]
    r = fairness.rates(fairness.lookup(pred, y, in_D), y, a)
    if metric == "sp":
        expected = r["sp_AxK"][1] - r["sp_AxK"][0]
    elif metric == "eo":
        expected = r["tpr_AxK"][1] - r["tpr_AxK"][0]
    else:
        off = ~np.eye(3, dtype=bool)
        expected = (r["conf_AxYxK"][1] - r["conf_AxYxK"][0])[off]
    np.testing.assert_allclose(gap, expected, atol=1e-14)
    assert np.abs(expected).max() > 1e-3


def test_diabetes_table_and_config_errors():
    t = fairness_lp.diabetes_table(2)
    assert t["x"].shape == (442, 9) and np.bincount(t["a"]).tolist() == [235, 207]
    assert abs(t["y"].mean() - 0.5) < 0.01
    cfg = {"seed": 0, "classify": {"part": "fairness", "real_table_classes": (1,)}}
    with pytest.raises(ConfigError, match="classify.real_table_classes"):
        classify_config.from_mapping(cfg)


def test_rounded_lp_set_measured_within_rounding_bound():
    rng = np.random.default_rng(8)
    n_rows = 300
    a = (rng.random(n_rows) < 0.45).astype(np.int64)
    y = rng.integers(3, size=n_rows)
    pred = np.where(rng.random(n_rows) < 0.8 - 0.25 * a, y, rng.integers(3, size=n_rows))
    n = pepin.counts(pred, y, a, 3)
    for metric in ("eo", "eodds"):
        lp = pepin.zero_bias_lp(n, metric, largest=False)
        bound = pepin.rounding_bound(n, metric, lp["x_AxYxK"])
        in_D = pepin.realise(pred, y, a, lp["x_AxYxK"], seed=0)
        after = fairness_lp.measured_bias(fairness.lookup(pred, y, in_D), y, a, metric, 3)
        before = fairness_lp.measured_bias(pred, y, a, metric, 3)
        assert after <= bound + 1e-12 and bound < 0.1 < before
        # With the rounding undone cell by cell the bound is zero, and it grows with the rounding.
        assert pepin.rounding_bound(n, metric, np.round(lp["x_AxYxK"])) == 0.0
