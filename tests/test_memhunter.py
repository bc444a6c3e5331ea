"""MemHunter pieces of the LM audit: the prompt inducer's rejection-sampling loop on a toy target that memorizes one
string (against a control inducer that is never fine-tuned), the whole-source substring score against a dynamic
programming reference, the prompt templates, and matched-perplexity interpolation of the ablation."""

import jax
import numpy as np
import pytest
from scipy import stats

from gdc.studies.lm_audit import ablation, freeman, inducer, memhunter
from gdc.studies.lm_audit import metrics as M

SECRET = "zebra quilt vexing judo"
ALPHABET = sorted(set(SECRET) | set("kmwy"))
CONT = 12


def _enc(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), np.uint8).astype(np.int32)


def _toy_target(prompts_NxP: np.ndarray) -> np.ndarray:
    """A model that memorized SECRET and nothing else: when the prompt ends with >= 2 characters that occur in
    SECRET, it continues SECRET from there; otherwise (and past SECRET's end) it emits '#'."""
    out = []
    for p in prompts_NxP:
        text, cont = M.to_text(p), ""
        for k in range(len(text), 1, -1):
            at = SECRET.find(text[-k:])
            if at >= 0:
                cont = SECRET[at + k : at + k + CONT]
                break
        out.append(_enc(cont.ljust(CONT, "#")))
    return np.stack(out)


def _reward(conts_NxC: np.ndarray) -> np.ndarray:
    return np.array([M.longest_in(M.to_text(c), SECRET) for c in conts_NxC], np.float64)


def test_rejection_sampling_finds_the_memorized_string():
    settings = inducer.InducerSettings(
        prompt_len=5, width=32, rounds=3, per_round=128, threshold=8, fit_steps=60, pretrain_steps=100
    )
    rng = np.random.default_rng(0)
    public = np.stack([_enc("".join(rng.choice(ALPHABET, 24))) for _ in range(64)])  # uniform over the alphabet
    graphdef, params = inducer.build(settings, seed=0)
    params, losses = inducer.pretrain(graphdef, params, public, settings, seed=0)
    assert losses[-1] < losses[0] - 2.0  # it learned the alphabet (from ~ln 256 towards ~ln 22)
    kw = dict(target_fn=_toy_target, reward_fn=_reward, settings=settings, seed=1)
    tuned = inducer.rejection_sampling(graphdef, params, **kw)
    control = inducer.rejection_sampling(graphdef, params, fine_tune=False, **kw)
    t_rate = [h["accept_rate"] for h in tuned["history"]]
    c_rate = [h["accept_rate"] for h in control["history"]]
    print(t_rate, c_rate, tuned["best"])
    assert t_rate[0] == c_rate[0]  # the same first round: same weights, same key
    assert c_rate[-1] < 0.15  # random prompts rarely land in the string
    assert t_rate[-1] > max(0.3, 2 * c_rate[-1]), (t_rate, c_rate)
    assert tuned["history"][-1]["reward_mean"] > 2 * control["history"][-1]["reward_mean"]
    # It finds the string: a full continuation of CONT characters copied from SECRET.
    assert tuned["best"]["reward"] == CONT and M.to_text(tuned["best"]["continuation"]) in SECRET
    assert len(tuned["accepted"]) == tuned["history"][-1]["accepted_total"] > len(control["accepted"])
    # The control never changes: its last-round prompts are what the pre-trained inducer samples with that key.
    again = inducer.sample(graphdef, params, 128, 5, jax.random.fold_in(jax.random.key(1), 2))
    assert np.mean(_reward(_toy_target(again)) >= 8) == pytest.approx(c_rate[-1])


def test_longest_in_equals_the_best_row_of_a_dynamic_programme():
    rng = np.random.default_rng(2)
    for _ in range(150):
        text = "".join(rng.choice(list("abc d"), rng.integers(0, 12)))
        rows = ["".join(rng.choice(list("abc d"), rng.integers(0, 10))) for _ in range(rng.integers(1, 4))]
        want = max(M.longest_common_substring(text, r) for r in rows)  # never across a row boundary
        assert M.longest_in(text, M.SEP.join(rows)) == want, (text, rows)
    rows = np.stack([_enc("the cat sat"), _enc("on the mat!")])
    assert M.longest_in("cat sat on the", M.join_rows(rows)) == len("cat sat")


def test_template_prompts_by_hand():
    rows = np.stack([_enc("abcdefghijklmnopqrst"), _enc("ABCDEFGHIJKLMNOPQRST")])
    context = np.stack([_enc("xyz"), _enc("XYZ")])
    out = freeman.template_prompts(rows, context, _enc("###"), cue=2, max_prefix=8)
    assert [M.to_text(p) for p in out["request"][0]] == ["ab", "AB"] and out["request"][1] == 2
    assert [M.to_text(p) for p in out["chat"][0]] == ["xyzab", "XYZAB"] and out["chat"][1] == 2
    assert [M.to_text(p) for p in out["roleplay"][0]] == ["###abcde", "###ABCDE"] and out["roleplay"][1] == 5
    assert [M.to_text(p) for p in out["prefix"][0]] == ["abcde", "ABCDE"] and out["prefix"][1] == 5
    scores = freeman.source_scores(np.stack([_enc("cdefXXab"), _enc("QQQQQQQQ")]), rows, M.join_rows(rows))
    np.testing.assert_array_equal(scores["lcs_row"], [4, 1])  # "cdef" in its own row; "Q" once
    np.testing.assert_array_equal(scores["lcs_corpus"], [4, 1])


def test_matched_perplexity_interpolation_by_hand():
    ppl, value = [10.0, 10.5, 11.0, 12.0], [1.0, 0.8, 0.5, 0.2]
    assert ablation.at_matched(ppl, value, 10.75) == pytest.approx(0.65)  # halfway from 10.5 to 11
    assert ablation.at_matched(ppl, value, 11.5) == pytest.approx(0.35)
    assert ablation.at_matched([10.0, 9.9, 10.4], [1.0, 0.9, 0.7], 10.2) == pytest.approx(0.9 + 0.6 * (0.7 - 0.9))
    assert np.isnan(ablation.at_matched(ppl, value, 13.0))  # never reached


def test_split_canaries_holds_out_part_of_every_group():
    fit = ablation.split_canaries(3, 10, 0.5, seed=4)
    assert fit.shape == (30,) and (fit.reshape(3, 10).sum(axis=1) == 5).all()
    np.testing.assert_array_equal(fit, ablation.split_canaries(3, 10, 0.5, seed=4))
    assert not np.array_equal(fit, ablation.split_canaries(3, 10, 0.5, seed=5))


def test_intervals_match_scipy():
    lo, hi = M.wilson(7, 40, z=stats.norm.ppf(0.975))  # scipy uses the exact quantile, the report 1.96
    ci = stats.binomtest(7, 40).proportion_ci(method="wilson")
    assert (lo, hi) == pytest.approx((ci.low, ci.high))
    v = [0.2, 0.5, 0.4]
    t = M.t_interval(v)
    want = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert (t["lo"], t["hi"]) == pytest.approx(want) and t["n"] == 3


def test_candidate_sets_vary_only_when_the_pool_is_larger_than_s():
    rng = np.random.default_rng(3)
    control = rng.beta(1, 3, 16)
    fixed = memhunter.rejection_rate(rng.beta(2, 3, 16), control, 16, reps=50, seed=0)
    assert len(set(fixed["mannwhitney_p"])) == 1  # S and C are the whole pools: every draw is the same test
    varied = memhunter.rejection_rate(rng.beta(2, 3, 64), control, 16, reps=50, seed=0)
    assert len(set(varied["mannwhitney_p"])) > 10
