"""LM audit (issue 7): metrics vs plain-Python references, jitted decode vs a step-by-step decode, the dataset-level
test's false-positive rate, probes and ablation on constructed activations, and the quick study end to end."""

import difflib
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from configs import lm_audit as lm_audit_config
from gdc import models, sharding
from gdc.errors import ConfigError
from gdc.evaluation import extraction
from gdc.studies.lm_audit import memhunter, probes, teacher_forcing
from gdc.studies.lm_audit import metrics as M
from gdc.studies.lm_audit.config import from_mapping

# ----------------------------------------------------------------------------------------------------------------
# Metrics.
# ----------------------------------------------------------------------------------------------------------------


def _substring_ref(a, b) -> int:
    """Brute force: the longest slice of ``a`` that is also a slice of ``b``."""
    slices_b = {tuple(b[i:j]) for i in range(len(b) + 1) for j in range(i, len(b) + 1)}
    return max(j - i for i in range(len(a) + 1) for j in range(i, len(a) + 1) if tuple(a[i:j]) in slices_b)


def _is_subsequence(sub, seq) -> bool:
    it = iter(seq)
    return all(x in it for x in sub)


def _lcs_ref(a, b) -> int:
    """Brute force: the longest subsequence of ``a`` that is a subsequence of ``b``."""
    for r in range(len(a), -1, -1):
        if any(_is_subsequence(c, b) for c in itertools.combinations(a, r)):
            return r
    return 0


def test_longest_common_substring_matches_references():
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = "".join(rng.choice(list("abc "), rng.integers(0, 9)))
        b = "".join(rng.choice(list("abc "), rng.integers(0, 9)))
        got = M.longest_common_substring(a, b)
        assert got == _substring_ref(a, b)
        assert got == difflib.SequenceMatcher(None, a, b, autojunk=False).find_longest_match().size
        wa, wb = a.split(), b.split()
        assert M.longest_common_substring(wa, wb) == _substring_ref(wa, wb)
    assert M.longest_common_substring("the cat sat", "a cat sat down") == len(" cat sat")


def test_lcs_and_rouge_l_match_references():
    rng = np.random.default_rng(1)
    for _ in range(150):
        a = list(rng.integers(0, 3, rng.integers(0, 7)))
        b = list(rng.integers(0, 3, rng.integers(0, 7)))
        assert M.lcs_length(a, b) == _lcs_ref(a, b)
    p, r, f = M.rouge_l("the cat sat on mat".split(), "the cat is on the mat".split())
    assert (p, r) == (4 / 5, 4 / 6)
    assert f == pytest.approx(2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))
    assert M.rouge_l([], ["x"]) == (0.0, 0.0, 0.0)


def test_score_pairs_by_hand():
    def enc(s):
        return np.frombuffer(s.encode(), np.uint8).astype(np.int32)

    gen = np.stack([enc("the cat sat"), enc("xyz q abcde")])
    ref = np.stack([enc("the cat sat"), enc("abcde q xyz")])
    out = M.score_pairs(gen, ref)
    np.testing.assert_array_equal(out["exact"], [1.0, 0.0])
    np.testing.assert_array_equal(out["lcs_chars"], [11, 5])
    np.testing.assert_array_equal(out["lcs_words"], [3, 1])
    np.testing.assert_allclose(out["rouge_p"], [1.0, 1 / 3])  # LCS of [xyz q abcde] and [abcde q xyz] is 1 word


def test_bootstrap_gap():
    rng = np.random.default_rng(2)
    t, c = rng.normal(1.0, 1.0, 200), rng.normal(0.0, 1.0, 300)
    g = M.bootstrap_gap(t, c, num_boot=1000, seed=0)
    assert g["gap"] == pytest.approx(t.mean() - c.mean())
    assert g["lo"] < g["gap"] < g["hi"] and 0.0 < g["lo"]
    # The interval's half-width is close to the normal-theory standard error.
    se = np.sqrt(t.var() / len(t) + c.var() / len(c))
    assert (g["hi"] - g["lo"]) / 2 == pytest.approx(1.96 * se, rel=0.15)
    flat = M.bootstrap_gap(np.ones(5), np.zeros(5))
    assert flat["lo"] == flat["hi"] == flat["gap"] == 1.0


# ----------------------------------------------------------------------------------------------------------------
# Models and decoding.
# ----------------------------------------------------------------------------------------------------------------


def _model(name: str, depth: int = 2):
    cfg = models.ModelConfig(name=name, width=16, depth=depth, num_heads=2)
    return models.build(cfg, seed=3, vocab_size=256, seq_len=24)


def _reference_decode(graphdef, params, prefix, steps, ablate=None):
    """One full causal forward per token and an argmax on the host. The buffer has a fixed width (zeros to the right
    are invisible to a causal model), so the forward compiles once."""
    forward = jax.jit(lambda p, buf: nnx.merge(graphdef, p)(buf, ablate=ablate))
    p = prefix.shape[1]
    buf = np.zeros((prefix.shape[0], p + steps - 1), np.int32)
    buf[:, :p] = prefix
    out = []
    for k in range(steps):
        logits = np.asarray(forward(params, jnp.asarray(buf)))
        out.append(logits[:, p - 1 + k].argmax(-1))
        if k < steps - 1:
            buf[:, p + k] = out[-1]
    return np.stack(out, axis=1)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_jitted_decode_equals_step_by_step(name):
    """The audit's greedy continuation (the engine's decoder, on the study's one-device mesh) as the host loop."""
    graphdef, params = _model(name)
    mesh = sharding.make_mesh(jax.devices()[:1])
    rng = np.random.default_rng(4)
    prefix = rng.integers(32, 127, (5, 6)).astype(np.int32)
    u = rng.normal(size=16).astype(np.float32)
    u /= np.linalg.norm(u)

    def greedy(ablate=None, batch_size=None):
        return extraction.greedy_decode(graphdef, params, prefix, 10, mesh, ablate=ablate, batch_size=batch_size)

    for ablate in (None, (1, u, 2.0)):
        got = greedy(ablate, batch_size=4)  # two calls
        np.testing.assert_array_equal(got, _reference_decode(graphdef, params, prefix, 10, ablate))
    assert not np.array_equal(greedy((2, u, 50.0)), greedy())


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_hidden_states_and_ablation(name):
    graphdef, params = _model(name)
    model = nnx.merge(graphdef, params)
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 256, (3, 12)), jnp.int32)
    logits, hidden = model(tokens, return_hidden=True)
    assert len(hidden) == 3 and all(h.shape == (3, 12, 16) for h in hidden)
    np.testing.assert_array_equal(logits, model(tokens))  # the plain call is unchanged
    u = np.zeros(16, np.float32)
    u[3] = 1.0
    for layer in range(3):
        _, hid = model(tokens, return_hidden=True, ablate=(layer, jnp.asarray(u), 1.0))
        np.testing.assert_allclose(hid[layer][..., 3], 0.0, atol=1e-6)
        for other in range(layer):  # layers below are untouched
            np.testing.assert_array_equal(hid[other], hidden[other])
    # teacher_forced agrees with the engine's per-example loss.
    tf = teacher_forcing.teacher_forced(graphdef, params, np.asarray(tokens))
    batch = {"tokens": tokens, "token_mask": jnp.ones((3, 11), bool)}
    loss_B, acc_B = models.per_example_loss(graphdef, params, batch)
    np.testing.assert_allclose(tf["nll_NxL"].mean(axis=1), loss_B, rtol=1e-5)
    np.testing.assert_allclose(tf["correct_NxL"].mean(axis=1), acc_B, rtol=1e-6)
    assert tf["hidden_LyxNxLxD"].shape == (3, 3, 11, 16)


# ----------------------------------------------------------------------------------------------------------------
# Dataset-level test.
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["continuous", "tied"])
def test_false_positive_rate_on_never_trained_sets(kind):
    rng = np.random.default_rng(6)
    if kind == "continuous":
        pool = rng.beta(0.7, 3.0, 400)
    else:  # ROUGE-L-like: most continuations share nothing, the rest a few words of ~6
        pool = rng.choice(np.arange(7) / 6, 400, p=[0.55, 0.2, 0.1, 0.06, 0.04, 0.03, 0.02])
    res = memhunter.rejection_rate(pool, None, 16, reps=2000, alpha=0.05, seed=0)
    for test in memhunter.TESTS:
        assert 0.02 <= res[test] <= 0.08, (test, res[test])
    # Shifted scores are detected: power rises with |S|.
    curve = memhunter.power_curve(pool + 0.3, pool, (2, 4, 16, 64), reps=200, seed=1)
    assert curve["mannwhitney"][-1] > 0.95 and curve["mannwhitney"][0] < curve["mannwhitney"][-1]
    assert memhunter.min_significant_size(curve) <= 64


def test_dataset_test_one_sided():
    lo, hi = np.linspace(0, 1, 20), np.linspace(0.5, 1.5, 20)
    assert memhunter.dataset_test(hi, lo)["mannwhitney"] < 0.01
    assert memhunter.dataset_test(lo, hi)["mannwhitney"] > 0.99  # the other direction is never evidence
    with pytest.raises(ValueError, match="need >= 2"):
        memhunter.dataset_test(hi[:1], lo)


# ----------------------------------------------------------------------------------------------------------------
# Probes and ablation on constructed activations.
# ----------------------------------------------------------------------------------------------------------------


def test_token_labels():
    t = np.array([[1, 1, 0, 0]], bool)
    r = np.array([[0, 1, 0, 1]], bool)
    np.testing.assert_array_equal(probes.token_labels(t, r), [[1, 0, -1, -1]])


def _planted(seed=7, n=40, length=16, d=8):
    rng = np.random.default_rng(seed)
    labels = rng.choice([1, 0, -1], (n, length), p=[0.3, 0.5, 0.2]).astype(np.int8)
    v = rng.normal(size=d)
    v /= np.linalg.norm(v)
    noise = rng.normal(size=(2, n, length, d))
    hidden = noise.copy()
    hidden[1] += 3.0 * (labels == 1)[..., None] * v  # layer 1 carries the label along v; layer 0 is noise
    return hidden, labels, v


def test_probes_find_planted_direction_and_ablation_removes_it():
    hidden, labels, v = _planted()
    res = probes.cross_canary_probes(hidden, labels, folds=4)
    assert res["auroc_K"][1] > 0.95 and 0.35 < res["auroc_K"][0] < 0.65
    assert res["num_pos"] == (labels == 1).sum() and res["num_neg"] == (labels == 0).sum()
    assert not np.isnan(res["oof_score_KxNxL"][1][labels >= 0]).any()  # every labelled token scored out of fold
    u, probe = probes.probe_direction(hidden[1], labels)
    assert abs(u @ v) > 0.9
    ablated = hidden.copy()
    ablated[1] = probes.project_out(hidden[1], u)
    np.testing.assert_allclose(ablated[1] @ u, 0.0, atol=1e-5)  # u is float32
    assert probes.cross_canary_probes(ablated, labels, folds=4)["auroc_K"][1] < 0.7
    score_N = probes.sequence_scores(probe, hidden[1])
    assert score_N.shape == (40,)
    assert np.corrcoef(score_N, (labels == 1).mean(axis=1))[0, 1] > 0.8


def test_cross_canary_split_does_not_leak_canary_identity():
    # Each canary has its own activation offset and one label for all its tokens: a token-level split would learn
    # canary identities (AUROC near 1); held-out canaries carry no usable signal.
    rng = np.random.default_rng(8)
    n, length, d = 30, 10, 16
    offset = rng.normal(size=(n, 1, d)) * 3.0
    hidden = (offset + 0.1 * rng.normal(size=(n, length, d)))[None]
    labels = np.repeat(rng.integers(0, 2, (n, 1)), length, axis=1).astype(np.int8)
    assert probes.cross_canary_probes(hidden, labels, folds=5)["auroc_K"][0] < 0.75


# ----------------------------------------------------------------------------------------------------------------
# Config and the quick study.
# ----------------------------------------------------------------------------------------------------------------


def test_config_errors_name_the_field():
    for field, value in (
        ("continuation", 60),
        ("sizes", ("64",)),
        ("alpha", 1.5),
        ("group_size", 400),
        ("power_sizes", (4, 64)),
        ("num_control", 300),
        ("template_context", 40),
        ("matched_ppl", (1.0,)),
    ):
        c = lm_audit_config.get_config()
        c.lm_audit[field] = value
        with pytest.raises(ConfigError, match=f"lm_audit.{field}"):
            from_mapping(c)
    with pytest.raises(ConfigError, match="lm_audit.bogus"):
        from_mapping({"lm_audit": {"bogus": 1}})


def test_quick_study_end_to_end(tmp_path):
    from gdc.studies import lm_audit

    cfg = lm_audit_config.get_config("quick")
    res = lm_audit.run(cfg, str(tmp_path), mode="all", command="pytest")
    for name in ("report.md", "results.json", "prefix_sweep.png", "power.png", "inducer.png", "probes_ablation.png"):
        assert os.path.exists(tmp_path / name), name
    with open(tmp_path / "results.json") as f:
        saved = json.load(f)
    assert len(saved["probe"]["auroc"]) == cfg.lm_audit.depth + 1
    assert set(saved["prefix_sweep"]) == {"8"}
    assert saved["size_sweep"].keys() == {"16x2"}
    assert set(saved["templates"]) == {"request", "chat", "roleplay", "prefix"}
    assert saved["templates_prompt_len"] == {"request": 8, "chat": 25, "roleplay": 25, "prefix": 8}
    for key in ("test_prefix", "test_inducer_tuned", "test_inducer_control"):
        assert 0.0 <= res["tests"][key]["mannwhitney"]["fpr"][-1]["mean"] <= 1.0
    ev = json.loads((tmp_path / "seed_0" / "eval.json").read_text())
    split = np.load(tmp_path / "seed_0" / "split.npz")
    # The control rows are never trained, the groups are trained rows, and S varies: |S| < the group size.
    assert not set(split["control"]) & set(split["kept"]) and set(split["groups_GxS"].ravel()) <= set(split["kept"])
    assert max(ev["test_prefix"]["fpr"]["sizes"]) < cfg.lm_audit.group_size
    for arm in ("tuned", "control"):
        assert len(ev["inducer"][arm]["history"]) == cfg.lm_audit.inducer_rounds
        assert ev["inducer"][arm]["num_rows"]["control"] == cfg.lm_audit.num_control
    # The ablation is measured on held-out canaries only.
    assert ev["ablation"]["num_test"] == cfg.lm_audit.group_size // 2
    report = (tmp_path / "report.md").read_text()
    assert "## 2. Dataset-level test" in report and "## 3. MemHunter's inducer" in report
    assert "## 5. GenDataCarto hotspot comparison" in report and "matched perplexity" in report
    # Resumable: a second run reuses every artefact (no retraining: the eval.json is not rewritten).
    mtime = os.path.getmtime(tmp_path / "seed_0" / "eval.json")
    lm_audit.run(cfg, str(tmp_path), mode="all")
    assert os.path.getmtime(tmp_path / "seed_0" / "eval.json") == mtime
