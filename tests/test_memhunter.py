"""MemHunter pieces of the LM audit: the prompt inducer's rejection-sampling loop on a toy target that memorizes one
string (against a control inducer that is never fine-tuned), the whole-source substring score against a dynamic
programming reference, the prompt templates, and matched-perplexity interpolation of the ablation."""

import jax
import numpy as np
import pytest

from gdc.studies.lm_audit import inducer
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
