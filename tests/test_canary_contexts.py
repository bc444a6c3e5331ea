"""Decoding contexts of canaries (gdc/evaluation/canaries.py::decode_contexts) for both placements, and extraction
and exposure from them: each random_offset copy is decoded from its own preceding bytes."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gdc import sharding
from gdc.data import canaries as canaries_lib
from gdc.data import sources
from gdc.evaluation import EvalContext, canaries, exposure, extraction

SEQ_LEN = 64


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


@pytest.fixture(scope="module")
def datasets() -> dict[str, sources.Dataset]:
    cfg = sources.DataConfig(source="pydoc_canaries", seq_len=SEQ_LEN, num_canaries=3, canary_repeats=4)
    return {p: sources.build_dataset(dataclasses.replace(cfg, canary_placement=p)) for p in canaries_lib.PLACEMENTS}


def _bytes(tokens) -> bytes:
    return bytes(np.asarray(tokens).astype(np.uint8).tolist())


def test_row_start_contexts_are_the_bare_prefixes(datasets):
    ds = datasets["row_start"]
    meta = ds.meta["canaries"]
    for group in canaries.GROUPS:
        got = canaries.decode_contexts(ds, group, seed=0)
        assert got["in_context"] is False
        np.testing.assert_array_equal(got["canary"], np.arange(len(meta[group])))
        assert [_bytes(c) for c in got["contexts"]] == [r["prefix"].encode() for r in meta[group]]
    controls = canaries.control_sequences(ds, seed=0)
    np.testing.assert_array_equal(controls["offset"], 0)
    for m, c in enumerate(controls["canary"]):
        text = meta["controls"][c]["text"].encode()
        assert _bytes(controls["tokens"][m, : len(text)]) == text  # the control sits at byte 0 of its row


def test_random_offset_contexts_are_each_copys_preceding_bytes(datasets):
    ds = datasets["random_offset"]
    meta = ds.meta["canaries"]
    got = canaries.decode_contexts(ds, "inserted", seed=0)
    assert got["in_context"] is True
    assert len(got["contexts"]) == 3 * 4
    x = 0
    for i, c in enumerate(meta["inserted"]):
        before = []
        for row, offset in zip(c["ids"], c["offsets"], strict=True):
            want = _bytes(ds.train["tokens"][row][:offset]) + c["prefix"].encode()
            assert _bytes(got["contexts"][x]) == want
            # The canary really is there in the training row: the context is the row's bytes up to the secret.
            assert _bytes(ds.train["tokens"][row][: offset + len(c["prefix"])]) == want
            assert got["canary"][x] == i
            before.append(want[:offset])
            x += 1
        assert len(set(before)) == len(before), i  # every copy has its own context
    assert any(len(b) > 0 for b in before)

    # Controls: the held-out rows and offsets of control_sequences, drawn as for row_start.
    seqs = canaries.control_sequences(ds, seed=3)
    got = canaries.decode_contexts(ds, "controls", seed=3)
    assert len(got["contexts"]) == len(meta["controls"]) * meta["canary_repeats"]
    np.testing.assert_array_equal(got["canary"], np.repeat(np.arange(len(meta["controls"])), meta["canary_repeats"]))
    assert seqs["offset"].max() > 0
    for m, (row, offset, c) in enumerate(zip(seqs["row"], seqs["offset"], seqs["canary"], strict=True)):
        prefix = meta["controls"][c]["prefix"].encode()
        assert _bytes(got["contexts"][m]) == _bytes(ds.heldout["tokens"][row][:offset]) + prefix
        assert _bytes(seqs["tokens"][m, offset : offset + len(prefix)]) == prefix
    np.testing.assert_array_equal(seqs["row"], canaries.control_sequences(datasets["row_start"], seed=3)["row"])


# ------------------------------------------------------------------------------------------------------------
# Extraction and exposure from per-copy contexts, with a hand-made model.
# ------------------------------------------------------------------------------------------------------------
TRIGGER = ord("#")


class Trigger(nnx.Module):
    """A causal LM whose next-byte logits are ``on[byte]`` once ``#`` occurred at or before the position and
    ``off[byte]`` before that."""

    def __init__(self, on_VxV: np.ndarray, off_VxV: np.ndarray):
        self.on = nnx.Param(jnp.asarray(on_VxV, jnp.float32))
        self.off = nnx.Param(jnp.asarray(off_VxV, jnp.float32))

    def __call__(self, inputs_BxL, keys_B=None):
        seen_BxL = jnp.cumsum(inputs_BxL == TRIGGER, axis=1) > 0
        return jnp.where(seen_BxL[..., None], self.on[...][inputs_BxL], self.off[...][inputs_BxL])


def _trigger_setup(placement: str = "random_offset"):
    """Canary A (secret 804) in rows 1, 4, 6, 9, with '#' before its copy in rows 1 and 6 (and after it in row 9);
    canary B (secret 917) in rows 2, 5, 8, 11, with '#' before its copy in row 8. After a '#' the model chains
    ' ' -> 8 -> 0 -> 4 -> '.': it emits A's secret, never B's."""
    rng = np.random.default_rng(0)
    row_len, d = 41, 3
    train = rng.integers(ord("a"), ord("z") + 1, (12, row_len)).astype(np.int32)
    heldout = rng.integers(ord("a"), ord("z") + 1, (6, row_len)).astype(np.int32)
    a = {**canaries_lib.make_canary("abcde", "804"), "ids": [1, 4, 6, 9], "offsets": [3, 0, 7, 5]}
    b = {**canaries_lib.make_canary("fghij", "917"), "ids": [2, 5, 8, 11], "offsets": [6, 2, 9, 4]}
    for c in (a, b):
        for row, offset in zip(c["ids"], c["offsets"], strict=True):
            train[row, offset : offset + len(c["text"])] = list(c["text"].encode())
    train[1, 1] = train[6, 0] = train[8, 4] = TRIGGER
    train[9, 39] = TRIGGER  # after its canary: no effect on decoding
    meta = {
        "placement": placement,
        "secret_digits": d,
        "canary_repeats": 4,
        "inserted": [a, b],
        "controls": [canaries_lib.make_canary("klmno", "123")],
    }
    on = np.zeros((256, 256))
    for prev, nxt in zip(" 804", "804.", strict=True):
        on[ord(prev), ord(nxt)] = 10.0
    off = rng.normal(size=(256, 256))
    arrays = lambda t: {"tokens": t, "token_mask": np.ones((len(t), row_len - 1), bool)}  # noqa: E731
    ds = sources.Dataset(arrays(train), arrays(heldout), {"kind": "lm", "canaries": meta})
    return ds, on, off


def _greedy_np(on, off, context, steps):
    """The hand model's greedy continuation, byte by byte."""
    seq = list(context)
    for _ in range(steps):
        table = on if TRIGGER in seq else off
        seq.append(int(np.argmax(table[seq[-1]])))
    return seq[len(context) :]


def _softmax_np(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def test_extraction_is_per_copy_context(mesh):
    ds, on, off = _trigger_setup()
    g, p = nnx.split(Trigger(on, off), nnx.Param)
    got = extraction.evaluate(EvalContext(g, p, mesh, ds, seed=0))
    # By hand: copies 0 and 2 of A decode 804; B's triggered copy decodes A's secret too, which is not B's.
    assert got["inserted_contexts"] == 8.0
    np.testing.assert_array_equal(got["inserted_context_canary"], [0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(got["inserted_extracted"], [True, False])
    assert got["inserted_extraction_rate"] == 0.5 and got["inserted_extracted_count"] == 1.0
    assert got["inserted_copy_extraction_rate"] == 2 / 8
    assert [got["inserted_decoded"][x] for x in (0, 2, 6)] == ["804."] * 3
    assert got["controls_extraction_rate"] == 0.0 and got["controls_contexts"] == 4.0

    # Against a numpy greedy loop over the contexts built by hand from the rows and offsets.
    meta = ds.meta["canaries"]
    for group, tokens in (("inserted", ds.train["tokens"]), ("controls", ds.heldout["tokens"])):
        if group == "inserted":
            where = [(r, o, i) for i, c in enumerate(meta[group]) for r, o in zip(c["ids"], c["offsets"], strict=True)]
        else:
            seqs = canaries.control_sequences(ds, seed=0)
            where = list(zip(seqs["row"], seqs["offset"], seqs["canary"], strict=True))
        contexts = [list(tokens[r, :o]) + list(meta[group][i]["prefix"].encode()) for r, o, i in where]
        secrets = [list(meta[group][i]["secret"].encode()) for _, _, i in where]
        decoded = [_greedy_np(on, off, ctx, 4) for ctx in contexts]
        assert list(got[f"{group}_decoded"]) == [_bytes(t).decode("utf-8", errors="replace") for t in decoded]
        right_XxD = np.array([np.equal(dec[: len(sec)], sec) for dec, sec in zip(decoded, secrets, strict=True)])
        copy_X = right_XxD.all(axis=1)
        assert got[f"{group}_copy_extraction_rate"] == pytest.approx(copy_X.mean())
        assert got[f"{group}_digit_accuracy"] == pytest.approx(right_XxD.mean())
        per_canary = [copy_X[[w[2] == i for w in where]].any() for i in range(len(meta[group]))]
        assert got[f"{group}_extraction_rate"] == pytest.approx(np.mean(per_canary))
        first = [_softmax_np((on if TRIGGER in ctx else off)[ctx[-1]]) for ctx in contexts]
        want = np.mean([f[s[0]] for f, s in zip(first, secrets, strict=True)])
        assert got[f"{group}_first_secret_prob"] == pytest.approx(want, rel=1e-5)

    # The same rows decoded from the bare prefixes (row_start): no context holds the trigger, nothing is extracted.
    bare = dataclasses.replace(ds, meta={**ds.meta, "canaries": {**meta, "placement": "row_start"}})
    got = extraction.evaluate(EvalContext(g, p, mesh, bare, seed=0))
    assert got["inserted_contexts"] == 2.0 and got["inserted_extracted_count"] == 0.0


def test_exposure_uses_the_first_copys_context(mesh):
    ds, on, off = _trigger_setup()
    g, p = nnx.split(Trigger(on, off), nnx.Param)
    got = exposure.evaluate(EvalContext(g, p, mesh, ds, seed=0), skewnorm_sample=200)
    meta = ds.meta["canaries"]

    def rank_np(context, secret):
        """Rank of the secret among all 3-digit strings by the hand model's log-likelihood after ``context``."""
        logp = np.log(np.stack([_softmax_np(row) for row in (on if TRIGGER in context else off)]))
        ll = np.zeros(1000)
        for v in range(1000):
            prev = context[-1]
            for digit in f"{v:03d}".encode():
                ll[v] += logp[prev, digit]
                prev = digit
        return 1 + int((ll > ll[int(secret)]).sum())

    # A's lowest row (1) holds the trigger: rank 1, the ceiling. B's lowest row (2) does not.
    for i, c in enumerate(meta["inserted"]):
        row, offset = c["ids"][0], c["offsets"][0]
        context = list(ds.train["tokens"][row, :offset]) + list(c["prefix"].encode())
        assert got["inserted_rank"][i] == rank_np(context, c["secret"]), i
    assert got["inserted_rank"][0] == 1.0 and got["inserted_exposure"][0] == pytest.approx(exposure.ceiling(3))
    assert got["inserted_rank"][1] > 1.0
    seqs = canaries.control_sequences(ds, seed=0)
    context = list(ds.heldout["tokens"][seqs["row"][0], : seqs["offset"][0]]) + list(
        meta["controls"][0]["prefix"].encode()
    )
    assert got["controls_rank"][0] == rank_np(context, meta["controls"][0]["secret"])


def test_exposure_inserted_evaluator_scores_only_the_inserted_canaries(mesh):
    """The study's ``exposure_inserted`` evaluator is the full exposure evaluator restricted to the inserted group:
    the same inserted ranks, and no control keys."""
    from gdc.evaluation import EVALUATORS

    ds, on, off = _trigger_setup()
    g, p = nnx.split(Trigger(on, off), nnx.Param)
    ctx = EvalContext(g, p, mesh, ds, seed=0)
    full = exposure.evaluate(ctx, skewnorm_sample=200)
    got = EVALUATORS["exposure_inserted"](ctx)
    assert not any(k.startswith("controls_") for k in got)
    np.testing.assert_array_equal(got["inserted_rank"], full["inserted_rank"])
    assert got["inserted_exposure_mean"] == full["inserted_exposure_mean"]
