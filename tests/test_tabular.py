"""Tabular diffusion family: replica metric vs brute force, TCM/TCMP, clusters, DDPM losses, sharpness, study."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gdc import models
from gdc.errors import ConfigError
from gdc.models import ddpm
from gdc.studies.tabular import data, metrics, sharpness, tcm
from gdc.train.step import example_keys


def _table(n: int, seed: int, cards=(3, 4), num_numeric: int = 3, num_classes: int = 2) -> data.Table:
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, c, n) for c in cards], axis=1).astype(np.int32)
    return data.Table(
        rng.normal(size=(n, num_numeric)) * 5.0, cat, rng.integers(0, num_classes, n).astype(np.int32), cards, 2
    )


def _brute_force(gen: data.Table, train: data.Table):
    """The reference code's loop: per query, min-max the numeric distances, add mismatches, divide by M."""
    m = train.num_NxF.shape[1] + train.cat_NxFc.shape[1] + 1
    d1, d2, nn1 = [], [], []
    for q in range(len(gen)):
        e = np.sqrt(((train.num_NxF - gen.num_NxF[q]) ** 2).sum(1))
        norm = (e - e.min()) / (e.max() - e.min()) if e.max() > e.min() else np.zeros_like(e)
        mism = (train.cat_with_label() != gen.cat_with_label()[q]).sum(1)
        dist = (norm + mism) / m
        i = int(np.argmin(dist))
        first = dist[i]
        dist[i] = np.inf
        d1.append(first)
        d2.append(dist.min())
        nn1.append(i)
    return np.array(d1), np.array(d2), np.array(nn1)


def test_replica_metric_matches_brute_force():
    train = _table(40, 0)
    gen = _table(30, 1)
    # A third of the queries are near-copies of training rows: replicas by construction.
    copies = np.arange(0, 30, 3)
    gen.num_NxF[copies] = train.num_NxF[copies] + 0.01
    gen.cat_NxFc[copies], gen.y_N[copies] = train.cat_NxFc[copies], train.y_N[copies]
    d1, d2, nn1 = metrics.nearest_two(gen, train, chunk=8)  # several chunks and a padded last one
    r1, r2, rn = _brute_force(gen, train)
    np.testing.assert_allclose(d1, r1, atol=1e-5)
    np.testing.assert_allclose(d2, r2, atol=1e-5)
    np.testing.assert_array_equal(nn1, rn)
    np.testing.assert_allclose(metrics.mixed_distances(gen, train).min(1), r1, atol=1e-12)
    out = metrics.memorization(gen, train)
    ref_ratio = r1 / r2
    ref_flags = ref_ratio < 1 / 3
    assert ref_flags[copies].all() and ref_flags.sum() >= len(copies)
    np.testing.assert_array_equal(out["replica_Q"], ref_flags)
    assert out["mem_ratio"] == pytest.approx(ref_flags.mean())
    ref_counts = np.zeros(40, int)
    for q in np.flatnonzero(ref_flags):
        ref_counts[rn[q]] += 1
    np.testing.assert_array_equal(out["counts_N"], ref_counts)
    thr = np.linspace(0, 1, 10)
    frac = [(ref_ratio < t).mean() for t in thr]
    ref_auc = sum((frac[i] + frac[i + 1]) / 2 * (thr[i + 1] - thr[i]) for i in range(9))
    assert out["mem_auc"] == pytest.approx(ref_auc, abs=1e-5)


def test_exact_duplicates_in_train_hide_replicas_unless_deduplicated():
    measure = metrics.measure
    train = _table(20, 0)
    train = train.append(train.take(np.array([5])))  # row 5 twice
    gen = train.take(np.array([5, 6]))
    raw = metrics.memorization(gen, train)
    assert not raw["replica_Q"][0] and raw["replica_Q"][1]  # d1 = d2 = 0 for the duplicated row: ratio NaN
    deduped = measure(gen, train, dedupe_train=True)
    assert deduped["replica_Q"].all()
    assert deduped["counts_N"][5] == deduped["counts_N"][20] == 1 and deduped["counts_N"][6] == 1


def _distinct_table(n: int, num_classes: int = 2) -> data.Table:
    """Every cell differs between any two rows, so a mixed row reveals which parent each feature came from."""
    rng = np.random.default_rng(3)
    num = rng.normal(size=(n, 4)) + np.arange(n)[:, None] * 100.0
    cat = np.stack([np.arange(n), (np.arange(n) + 7) % n], axis=1).astype(np.int32)
    return data.Table(num, cat, (np.arange(n) % num_classes).astype(np.int32), (n, n), num_classes)


def _parents(new: data.Table, table: data.Table, a, b):
    f_num = table.num_NxF.shape[1]
    from_b = np.concatenate([new.num_NxF == table.num_NxF[b], new.cat_NxFc == table.cat_NxFc[b]], axis=1)
    from_a = np.concatenate([new.num_NxF == table.num_NxF[a], new.cat_NxFc == table.cat_NxFc[a]], axis=1)
    return from_a, from_b, f_num


def test_tabcutmix_keeps_labels_and_mixes_two_same_class_rows():
    table = _distinct_table(30)
    new, a, b = tcm.tabcutmix(table, 200, seed=0)
    np.testing.assert_array_equal(new.y_N, table.y_N[a])
    np.testing.assert_array_equal(table.y_N[a], table.y_N[b])
    from_a, from_b, _ = _parents(new, table, a, b)
    assert np.all(from_a | from_b)
    differ = a != b
    assert np.all(from_a[differ] ^ from_b[differ])
    assert from_b[differ].any(axis=1).mean() > 0.5  # most rows take some features from B


def test_tabcutmix_plus_swaps_whole_clusters():
    table = _distinct_table(30, num_classes=3)
    clusters = [np.array([0, 1, 4]), np.array([2]), np.array([3, 5])]
    new, a, b = tcm.tabcutmix_plus(table, 300, seed=1, clusters=clusters)
    np.testing.assert_array_equal(new.y_N, table.y_N[a])
    np.testing.assert_array_equal(table.y_N[a], table.y_N[b])
    from_a, from_b, _ = _parents(new, table, a, b)
    differ = a != b
    assert np.all(from_a | from_b)
    for c in clusters:  # each cluster comes entirely from A or entirely from B
        block = from_b[differ][:, c]
        assert np.all(block.all(axis=1) | (~block).all(axis=1))
    assert from_b[differ].any(axis=1).mean() > 0.3  # clusters do get swapped


def test_association_and_clusters():
    rng = np.random.default_rng(0)
    n = 400
    x0 = rng.normal(size=n)
    x2 = rng.normal(size=n)
    num = np.stack([x0, x0 + 0.05 * rng.normal(size=n), x2], axis=1)
    c0 = np.digitize(x2, [-1.0, 0.0, 1.0]).astype(np.int32)  # a quantisation of x2: eta close to 1
    c1 = c0.copy()  # identical: bias-corrected Cramer's V exactly 1
    c2 = rng.integers(0, 3, n).astype(np.int32)  # independent of everything
    table = data.Table(num, np.stack([c0, c1, c2], axis=1), rng.integers(0, 2, n).astype(np.int32), (4, 4, 3), 2)
    assert tcm.cramers_v(c0, c1) == pytest.approx(1.0)
    assert tcm.cramers_v(c0, c2) < 0.1
    eta2 = 1 - sum(((x2[c0 == k] - x2[c0 == k].mean()) ** 2).sum() for k in range(4)) / ((x2 - x2.mean()) ** 2).sum()
    assert tcm.correlation_ratio(c0, x2) == pytest.approx(np.sqrt(eta2))
    clusters = sorted(tuple(c.tolist()) for c in tcm.feature_clusters(table))
    assert clusters == [(0, 1), (2, 3, 4), (5,)]


def test_dynamic_cut_prunes_the_most_replicated_rows():
    counts = np.zeros((3, 20), int)
    counts[0, [4, 9]] = 3
    counts[1, 4] = 2
    counts[2, 13] = 1
    keep, info = tcm.dynamic_cut(counts, 0.15, seed=0)  # k = 3
    assert set(np.setdiff1d(np.arange(20), keep)) == {4, 9, 13}
    assert info["removed"] == 3 and info["rows_with_counts"] == 3


def test_tables_encode_decode_and_csv(tmp_path):
    for name in data.SKLEARN_TABLES:
        t = data.sklearn_table(name)
        assert t.cat_NxFc.shape[1] >= 2 and t.num_classes >= 2 and np.isfinite(t.num_NxF).all()
        enc = data.Encoder.fit(t)
        back = enc.decode(enc.encode(t))
        np.testing.assert_allclose(back.num_NxF, t.num_NxF, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(back.cat_NxFc, t.cat_NxFc)
        np.testing.assert_array_equal(back.y_N, t.y_N)
    syn = data.synthetic_table(200, seed=0)
    assert len(syn) == 200 and syn.flags["duplicate"].sum() == 30 and syn.flags["outlier"].sum() == 6
    rows = syn.num_NxF[syn.flags["duplicate"]]
    assert len(np.unique(rows, axis=0)) == 10  # 10 distinct rows, 3 copies each
    path = tmp_path / "magic.csv"
    lines = ["a,b,c,d,e,f,g,h,i,j,class"]
    rng = np.random.default_rng(0)
    for i in range(12):
        lines.append(",".join(f"{v:.3f}" for v in rng.normal(size=10)) + ("," + ("g" if i % 3 else "h")))
    lines.append("x,1,2,3,4,5,6,7,8,9,g")  # unparsable numeric: dropped
    path.write_text("\n".join(lines) + "\n")
    t = data.csv_table(str(path), "magic")
    assert t.num_NxF.shape == (12, 10) and t.cat_NxFc.shape == (12, 0) and t.num_classes == 2
    assert t.y_N.tolist() == [1 if i % 3 == 0 else 0 for i in range(12)]  # codes of sorted levels: g=0, h=1
    adult = tmp_path / "adult.csv"
    adult.write_text(
        "age,wc,fnl,edu,en,ms,occ,rel,race,sex,cg,cl,hpw,nc,income\n"
        + "\n".join(
            f"{20 + i},Private,{1000 + i},HS,9,Never,Sales,Own,White,{'M' if i % 2 else 'F'},0,0,40,US,"
            f"{'>50K' if i % 3 else '<=50K'}"
            for i in range(6)
        )
        + "\n"
    )
    t = data.csv_table(str(adult), "adult")
    assert t.num_NxF.shape == (6, 6) and t.cat_NxFc.shape == (6, 8) and t.cards[-2] == 2
    with pytest.raises(ConfigError, match="tabular.csv_path"):
        data.csv_table(str(tmp_path / "missing.csv"), "adult")


def test_packaged_real_tables_load_offline_with_declared_roles(monkeypatch):
    import socket
    from importlib import metadata as md

    def no_network(*args, **kwargs):
        raise AssertionError("the packaged tables must not touch the network")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    pen = data.load("penguins", num_rows=0, seed=0)
    # 344 rows, 11 with a missing cell; species counts of the complete rows: Adelie 146, Chinstrap 68, Gentoo 119.
    assert len(pen) == 333 and pen.num_NxF.shape == (333, 4) and pen.cat_NxFc.shape == (333, 3)
    assert pen.cards == (3, 2, 3) and pen.num_classes == 3 and np.bincount(pen.y_N).tolist() == [146, 68, 119]
    np.testing.assert_array_equal(pen.num_NxF[0], [39.1, 18.7, 181.0, 3750.0])  # Adelie, Torgersen, male, 2007
    assert pen.cat_NxFc[0].tolist() == [2, 1, 0] and pen.y_N[0] == 0  # sorted levels: Torgersen, male, 2007
    cars = data.load("cars", num_rows=0, seed=0)
    # 406 rows, 14 without mpg or horsepower; origins of the 392 complete rows: Europe 68, Japan 79, USA 245.
    assert len(cars) == 392 and cars.num_NxF.shape == (392, 5) and cars.cat_NxFc.shape == (392, 2)
    assert cars.cards == (5, 12) and np.bincount(cars.y_N).tolist() == [68, 79, 245]
    np.testing.assert_array_equal(cars.num_NxF[0], [18.0, 307.0, 130.0, 3504.0, 12.0])  # chevrolet chevelle malibu
    assert cars.cat_NxFc[0].tolist() == [4, 0] and cars.y_N[0] == 2  # 8 cylinders (5th of 3,4,5,6,8), 1970, USA
    real = md.distribution

    class Other:
        version = "9.9"

    monkeypatch.setattr(md, "distribution", lambda name: Other() if name == "palmerpenguins" else real(name))
    with pytest.raises(ConfigError, match="tabular.dataset='penguins'.*palmerpenguins==0.1.6"):
        data.packaged_table("penguins")


def _far_row_case():
    """Training rows A (0, cat 0), B (1, cat 1), C (2, cat 1); M = 1 numeric + 1 categorical + the label = 3."""
    train = data.Table(
        np.array([[0.0], [1.0], [2.0]]), np.array([[0], [1], [1]], np.int32), np.zeros(3, np.int32), (2,), 1
    )
    # Query 0: 186 units out (C is 184 away, the typical gap here is ~1), categories of C. Query 1: a near copy of C.
    query = data.Table(np.array([[186.0], [2.01]]), np.array([[1], [1]], np.int32), np.zeros(2, np.int32), (2,), 1)
    return train, query


def test_fixed_scale_mem_ratio_does_not_flag_a_far_row():
    train, query = _far_row_case()
    # Per-query: e = (186, 185, 184) min-max -> (1, 0.5, 0); mismatches (1, 0, 0): d = (2, 0.5, 0) / 3.
    d1, d2, nn1 = metrics.nearest_two(query, train)
    np.testing.assert_allclose([d1[0], d2[0]], [0.0, 0.5 / 3], atol=1e-6)
    # Fixed: numerics / (range 2 x sqrt(1)): e = (93, 92.5, 92): d = (94, 92.5, 92) / 3, ratio 92 / 92.5.
    f1, f2, fnn = metrics.nearest_two(query, train, scale="fixed")
    np.testing.assert_allclose([f1[0], f2[0]], [92.0 / 3, 92.5 / 3], rtol=1e-6)
    np.testing.assert_allclose([f1[1], f2[1]], [0.005 / 3, 0.505 / 3], rtol=1e-4)
    assert nn1[0] == fnn[0] == 2
    np.testing.assert_allclose(metrics.mixed_distances(query, train, "fixed")[0], np.array([94, 92.5, 92]) / 3)
    per_query, fixed = metrics.memorization(query, train), metrics.memorization(query, train, scale="fixed")
    assert per_query["replica_Q"].tolist() == [True, True]  # the far row has ratio 0: flagged
    assert per_query["ratio_Q"][0] == 0.0
    assert fixed["replica_Q"].tolist() == [False, True]  # ratio 0.995; the near copy stays flagged
    # Numeric distance to the metric-nearest row in training sds (std of 0, 1, 2 is sqrt(2/3)).
    np.testing.assert_allclose(per_query["gap_nn1_Q"], np.array([184.0, 0.01]) / np.sqrt(2 / 3), rtol=1e-9)
    s = metrics.gap_summary(np.array([0.1, 5.0, 10.0, 0.2]), np.array([True, True, False, True]), typical=1.0)
    assert s["flagged"] == 3 and s["q50"] == pytest.approx(0.2) and s["max"] == 5.0
    assert s["share_far"] == pytest.approx(1 / 3)
    from gdc.studies.tabular.report import wilson

    # Wilson by hand: 0 of 10 -> [0, z^2 / (n + z^2)]; 5 of 10 -> 0.5 +- z sqrt(0.025 + z^2 / 400) / (1 + z^2 / 10).
    np.testing.assert_allclose(wilson(0, 10), (0.0, 1.96**2 / (10 + 1.96**2)), atol=1e-12)
    half = 1.96 * np.sqrt(0.025 + 1.96**2 / 400) / (1 + 1.96**2 / 10)
    np.testing.assert_allclose(wilson(5, 10), (0.5 - half, 0.5 + half), atol=1e-12)


def test_tabcutmix_plus_recovers_planted_groups_and_swaps_within_them():
    from gdc.studies.tabular.study import _groups_intact

    table = data.synthetic_table(400, seed=0)
    train, _ = data.split(table, 200, 150, seed=0)
    assert table.groups == ((0, 3, 6), (1, 4, 7), (2, 5, 8))  # numeric j and categorical j in group j % 3
    clusters = tcm.feature_clusters(train)
    assert sorted(tuple(c.tolist()) for c in clusters) == sorted(table.groups)
    new, a, b = tcm.tabcutmix_plus(train, 300, seed=2, clusters=clusters)
    from_a, from_b, _ = _parents(new, train, a, b)
    differ = a != b
    swapped = 0
    for g in table.groups:  # every group comes whole from A or whole from B
        block_a, block_b = from_a[differ][:, list(g)], from_b[differ][:, list(g)]
        assert np.all(block_a.all(axis=1) | block_b.all(axis=1))
        swapped += int((block_b.all(axis=1) & ~block_a.all(axis=1)).sum())
    assert swapped > 50  # groups are swapped, not just kept
    assert _groups_intact(new, train, a, b, table.groups) == 1.0
    mixed, ta, tb = tcm.tabcutmix(train, 300, seed=2)  # single features: most mixed rows split some group
    assert _groups_intact(mixed, train, ta, tb, table.groups) < 0.5


@functools.cache
def _ddpm():
    cfg = models.ModelConfig(name="ddpm", width=16, depth=2, diffusion_steps=20, score_draws=4)
    cfg.validate()
    return models.build(cfg, seed=0, num_features=5)


def test_ddpm_loss_keys_and_fixed_scoring_draws():
    graphdef, params = _ddpm()
    loss = jax.jit(functools.partial(models.per_example_loss, graphdef))
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    idx = np.arange(6, dtype=np.int32)
    key = jax.random.PRNGKey(0)
    batch = {"x": jnp.asarray(x), "index": jnp.asarray(idx)}
    perm = np.array([3, 0, 5, 1, 4, 2])
    batch_p = {"x": jnp.asarray(x[perm]), "index": jnp.asarray(idx[perm])}
    # Training: the noise depends on (seed, step, id) only, not on the row's position or batch-mates.
    l0, acc = loss(params, batch, example_keys(key, jnp.int32(7), batch["index"]))
    lp, _ = loss(params, batch_p, example_keys(key, jnp.int32(7), batch_p["index"]))
    np.testing.assert_allclose(np.asarray(lp), np.asarray(l0)[perm], rtol=1e-5, atol=1e-6)
    l8, _ = loss(params, batch, example_keys(key, jnp.int32(8), batch["index"]))
    assert not np.allclose(l0, l8)  # another step draws other noise
    assert np.all(np.asarray(acc) == 0) and np.all(np.isfinite(l0))
    # Scoring: fixed draws per id, the same at every call and in any batch.
    s0, _ = loss(params, batch, None)
    sp, _ = loss(params, batch_p, None)
    np.testing.assert_allclose(np.asarray(sp), np.asarray(s0)[perm], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(loss(params, batch, None)[0]), np.asarray(s0))
    other = {"x": batch["x"], "index": batch["index"] + 100}
    assert not np.allclose(loss(params, other, None)[0], s0)  # the draws are the id's
    # The scoring loss is the mean over the K stratified draws.
    model = nnx.merge(graphdef, params)
    t_BxK, eps_BxKxD = ddpm._draws(model, batch["index"], None)
    t_BxK = np.asarray(t_BxK)
    assert np.all(t_BxK // 5 == np.arange(4)[None])  # T = 20, K = 4: one draw per stratum of 5 steps
    ab = ddpm.alpha_bar(20)[t_BxK]
    xt = np.sqrt(ab)[..., None] * x[:, None] + np.sqrt(1 - ab)[..., None] * np.asarray(eps_BxKxD)
    pred = np.asarray(model(jnp.asarray(xt.reshape(24, 5), jnp.float32), jnp.asarray(t_BxK.reshape(24))))
    ref = ((pred.reshape(6, 4, 5) - np.asarray(eps_BxKxD)) ** 2).mean(axis=(1, 2))
    np.testing.assert_allclose(np.asarray(s0), ref, rtol=1e-4, atol=1e-6)


def test_ddpm_sample_and_score():
    graphdef, params = _ddpm()
    model = nnx.merge(graphdef, params)
    x = np.asarray(ddpm.sample(model, jax.random.PRNGKey(1), 7))
    assert x.shape == (7, 5) and np.isfinite(x).all()
    z = jnp.ones((2, 5))
    s = ddpm.score(model, z, 3)
    eps = model(z, jnp.full((2,), 3, jnp.int32))
    np.testing.assert_allclose(np.asarray(s), -np.asarray(eps) / np.sqrt(1 - ddpm.alpha_bar(20)[3]), rtol=1e-5)


def test_sharpness_eigenvalues_match_finite_differences():
    graphdef, params = _ddpm()
    x = np.random.default_rng(2).normal(size=(3, 5))
    eigs = sharpness.eigenvalues(graphdef, params, x, t=2, chunk=2)
    with jax.enable_x64():
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        m64 = nnx.merge(graphdef, p64)
        for i in range(3):
            h = 1e-5
            jac = np.stack(
                [
                    (
                        np.asarray(ddpm.score(m64, jnp.asarray(x[i] + h * e)[None], 2))[0]
                        - np.asarray(ddpm.score(m64, jnp.asarray(x[i] - h * e)[None], 2))[0]
                    )
                    / (2 * h)
                    for e in np.eye(5)
                ],
                axis=1,
            )
            np.testing.assert_allclose(eigs[i], np.linalg.eigvalsh(0.5 * (jac + jac.T)), rtol=1e-3, atol=1e-3)
    s = sharpness.summary(np.array([[-3.0, -0.5, 0.2, 1.0], [-2.0, -1.5, -1.0, 4.0]]), kappa=1.0)
    np.testing.assert_array_equal(s["count_below"], [1, 2])
    np.testing.assert_allclose(s["neg_sum"], [-3.5, -4.5])
    np.testing.assert_allclose(s["trace"], [-2.3, -0.5])


def test_tabular_source_needs_an_npz_table(tmp_path):
    from gdc.data import sources

    for path in ("", str(tmp_path / "missing.npz")):
        with pytest.raises(ConfigError, match="data.path"):
            sources.build_dataset(sources.DataConfig(source="tabular", path=path))
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 2)))
    with pytest.raises(ConfigError, match="lacks the arrays"):
        sources.build_dataset(sources.DataConfig(source="tabular", path=str(tmp_path / "bad.npz")))


def test_bad_config_names_the_field(tmp_path):
    from configs import tabular_ddpm
    from gdc.studies import tabular

    for field, value in (
        ("datasets", ("iris",)),
        ("datasets", ("cars", "cars")),
        ("sizes", (1000,)),
        ("prune_fraction", 1.5),
        ("arms", ("tcm",)),
    ):
        c = tabular_ddpm.get_config("quick")
        c.tabular[field] = value
        with pytest.raises(ConfigError, match=f"tabular.{field}"):
            tabular.run(c, str(tmp_path))
    assert not os.listdir(tmp_path)  # nothing was built
    c = tabular_ddpm.get_config("quick")
    c.tabular.datasets, c.tabular.csv_path = ("adult",), ""
    with pytest.raises(ConfigError, match="tabular.csv_path"):
        tabular.run(c, str(tmp_path))


def test_ddpm_trains_through_the_engine_with_fixed_draw_scoring_passes(tmp_path):
    from gdc.data import sources
    from gdc.scoring import workdir as score_workdir
    from gdc.studies.tabular.config import TabularConfig
    from gdc.studies.tabular.study import engine_config
    from gdc.train import loop

    train, heldout = data.split(data.synthetic_table(80, seed=0), 48, 16, seed=0)
    enc = data.Encoder.fit(train)
    path = data.save(str(tmp_path / "t.npz"), enc.encode(train), train.y_N, enc.encode(heldout), heldout.y_N)
    cfg = TabularConfig(width=16, depth=1, diffusion_steps=10, score_draws=3, batch_size=16, epochs=2, sizes=(48,))
    rc = engine_config(cfg, 0, path, scoring=True)
    result = loop.train(rc, str(tmp_path / "run"))
    loss_ExN, meta = score_workdir.load_loss_matrix(str(tmp_path / "run"), "passes")
    assert loss_ExN.shape == (2, 48) and np.isfinite(loss_ExN).all() and meta["tracker_reads"].startswith("fixed")
    # The last pass ran at the final parameters with the id-derived draws: recompute it outside the engine.
    graphdef, _ = loop.build_model(rc, sources.build_dataset(rc.data))
    batch = {"x": jnp.asarray(enc.encode(train)), "index": jnp.arange(48, dtype=jnp.int32)}
    again, _ = models.per_example_loss(graphdef, result.state.params, batch, None)
    np.testing.assert_allclose(loss_ExN[-1], np.asarray(again), rtol=1e-4, atol=1e-6)
    tracker = score_workdir.load_tracker(str(tmp_path / "run"))
    np.testing.assert_allclose(tracker["last_loss_N"], loss_ExN[-1], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a hang guard: two tables x eight tiny runs take minutes on shared cores
def test_study_quick_end_to_end_and_resume(tmp_path):
    from configs import tabular_ddpm
    from gdc.studies import tabular

    config = tabular_ddpm.get_config("quick")
    out = tabular.run(config, str(tmp_path), command="test")
    for name in ("results.json", "report.md", "synthetic_tabular_memorization.png", "penguins_tabular_gaps.png"):
        assert (tmp_path / name).exists()
    assert set(out["tables"]) == {"synthetic", "penguins"}
    assert out["tables"]["penguins"]["per_seed"][0]["table_rows"] == 333
    res = out["tables"]["synthetic"]["per_seed"][0]
    arms = {"baseline", "tcm", "tcmp", "dynamic_cut", "gdc_prune_m", "gdc_downweight_d", "other_model"}
    assert set(res["arms"]) == arms
    assert len(res["mem_vs_epochs"]["mem_ratio"]) == 3 and set(res["mem_vs_size"]) == {"32", "64"}
    assert res["dynamic_cut"]["checkpoints"] == [2, 4] and len(res["dynamic_cut"]["replica_events_per_stop"]) == 2
    base = res["arms"]["baseline"]
    assert base["excess"] == pytest.approx(base["mem_ratio"] - res["heldout_mem_ratio"])
    assert base["excess_fixed"] == pytest.approx(base["mem_ratio_fixed"] - res["heldout_mem_ratio_fixed"])
    assert res["clusters_recover_groups"] == 1.0 and res["tcmp_groups_intact"] == 1.0
    assert res["arms"]["dynamic_cut"]["removed_rows"] == res["arms"]["gdc_prune_m"]["removed_rows"] == 6
    for arm in res["arms"].values():
        assert 0.0 <= arm["mem_ratio"] <= 1.0
    # The tracker's scoring passes: one fixed-draw pass per epoch of the probe.
    seed_dir = tmp_path / "synthetic" / "seed_0"
    passes = sorted(os.listdir(seed_dir / "probe" / "trackers"))
    assert sum(p.endswith(".npy") for p in passes) == 6
    # Resume: a lost result.json is rebuilt from the stored stops and finished runs, with the same numbers.
    metrics_before = (seed_dir / "probe" / "metrics.jsonl").read_text()
    os.remove(seed_dir / "result.json")
    again = tabular.run(config, str(tmp_path), command="test")["tables"]["synthetic"]["per_seed"][0]
    assert (seed_dir / "probe" / "metrics.jsonl").read_text() == metrics_before  # no step re-run
    for key in ("mem_vs_epochs", "mem_vs_size", "scores_vs_counts", "arms", "flag_gaps", "dynamic_cut"):
        assert json.dumps(again[key], sort_keys=True) == json.dumps(res[key], sort_keys=True)
