"""Evaluation tests: padded per-example pass, perplexity, extraction, exact and skew-normal exposure, MIA."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import tiny_config
from flax import nnx
from scipy import stats
from sklearn import metrics

from gdc import models, sharding
from gdc.data import canaries as canaries_lib
from gdc.data import sources
from gdc.evaluation import (
    EVALUATORS,
    EvalContext,
    canaries,
    common,
    evaluate,
    exposure,
    extraction,
    mia,
    perplexity,
)
from gdc.train import loop

PREFIX = "the secret code of abcde is "
# Jitted reference forward: eager op-by-op dispatch of the models costs seconds per call on 2 cores.
_forward = jax.jit(models.forward, static_argnums=0)
_per_example_loss = jax.jit(models.per_example_loss, static_argnums=0)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


def _lm(name: str, *, width: int = 16, depth: int = 1, seq_len: int = 40, seed: int = 0):
    cfg = models.ModelConfig(name=name, width=width, depth=depth, num_heads=2)
    return models.build(cfg, seed=seed, seq_len=seq_len)


def _log_softmax_np(logits) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _lm_arrays(n: int, seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = rng.random((n, seq_len)) < 0.8
    mask[0] = False  # an example without a valid token
    return {"tokens": rng.integers(32, 127, (n, seq_len + 1)).astype(np.int32), "token_mask": mask}


def _dataset(heldout: dict, train: dict | None = None, meta: dict | None = None) -> sources.Dataset:
    train = heldout if train is None else train
    return sources.Dataset(train=train, heldout=heldout, meta={"kind": "lm", **(meta or {})})


# ------------------------------------------------------------------------------------------------------------
# The padded per-example pass and perplexity.
# ------------------------------------------------------------------------------------------------------------
def test_per_example_stats_score_every_example_once(mesh):
    g, p = _lm("lstm")
    arrays = _lm_arrays(37, 12)
    ctx = EvalContext(g, p, mesh, _dataset(arrays), batch_size=16)
    got = common.per_example_stats(ctx, arrays)
    want_loss, want_acc = _per_example_loss(g, p, arrays)
    np.testing.assert_allclose(got["loss"], want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["accuracy"], want_acc, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got["tokens"], arrays["token_mask"].sum(1))
    # Three batches, the last one padded: one compilation.
    assert common._stats_fn(g)._cache_size() == 1
    one = EvalContext(g, p, sharding.make_mesh(jax.devices()[:1]), _dataset(arrays), batch_size=5)
    np.testing.assert_allclose(common.per_example_losses(one, arrays), got["loss"], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="multiple"):
        common.per_example_losses(EvalContext(g, p, mesh, _dataset(arrays), batch_size=12), arrays)


def test_perplexity_matches_manual(mesh):
    g, p = _lm("lstm")
    arrays = _lm_arrays(21, 12, seed=1)
    logp = _log_softmax_np(_forward(g, p, {"tokens": arrays["tokens"]}))
    nll_NxL = -np.take_along_axis(logp, arrays["tokens"][:, 1:, None], axis=-1)[..., 0]
    w = arrays["token_mask"]
    count_N = w.sum(1)
    per_example = (nll_NxL * w).sum(1)[count_N > 0] / count_N[count_N > 0]
    token_loss = (nll_NxL * w).sum() / w.sum()

    got = perplexity.evaluate(EvalContext(g, p, mesh, _dataset(arrays), batch_size=8))
    np.testing.assert_allclose(got["heldout_perplexity"], np.exp(per_example.mean()), rtol=1e-5)
    np.testing.assert_allclose(got["heldout_perplexity_token"], np.exp(token_loss), rtol=1e-5)
    np.testing.assert_allclose(got["heldout_bits_per_char"], token_loss / np.log(2), rtol=1e-5)
    # Equal lengths: the two perplexities coincide.
    same = perplexity.summarize(np.array([1.0, 2.0]), np.array([4, 4]))
    assert same["heldout_perplexity"] == pytest.approx(same["heldout_perplexity_token"])


# ------------------------------------------------------------------------------------------------------------
# Greedy extraction.
# ------------------------------------------------------------------------------------------------------------
def _naive_greedy(g, p, prefix: canaries.Prefix, steps: int, length: int = 40) -> list[int]:
    """Argmax of a forward pass over the whole sequence so far, one byte at a time.

    The sequence is followed by random bytes up to a fixed length (the models are causal), so the reference
    compiles once; the decoder under test pads differently (zeros, then its own output).
    """
    seq = canaries.prefix_tokens(prefix).tolist()
    rng = np.random.default_rng(len(seq))
    for _ in range(steps):
        tokens = rng.integers(0, 256, (1, length + 1)).astype(np.int32)
        tokens[0, : len(seq)] = seq
        logits = _forward(g, p, {"tokens": tokens})
        seq.append(int(np.argmax(np.asarray(logits)[0, len(seq) - 1])))
    return seq[-steps:]


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer"])
def test_greedy_decode_matches_naive_loop(mesh, name):
    g, p = _lm(name, depth=2 if name == "lstm" else 1, seed=3)  # two LSTM layers exercise the stacked cell
    prefixes = [PREFIX, "ab", "x = 1 if y else"]
    got = extraction.greedy_decode(g, p, prefixes, 7, mesh)
    assert got.shape == (3, 7)
    for row, prefix in zip(got, prefixes, strict=True):
        assert row.tolist() == _naive_greedy(g, p, prefix, 7)


def test_prefix_buffer_takes_text_bytes_and_tokens():
    raw = b"\xff\xfe ab"  # not valid utf-8
    buf_CxT, len_C = canaries.prefix_buffer(["héllo", raw, np.array([7, 300, 2], np.int64)], 2)
    np.testing.assert_array_equal(len_C, [6, 5, 3])
    assert buf_CxT.shape == (3, 8) and buf_CxT.dtype == np.int32
    np.testing.assert_array_equal(buf_CxT[0, :6], list("héllo".encode()))
    np.testing.assert_array_equal(buf_CxT[1], [255, 254, 32, 97, 98, 0, 0, 0])
    np.testing.assert_array_equal(buf_CxT[2], [7, 300, 2, 0, 0, 0, 0, 0])
    for bad in (np.zeros((1, 2), np.int32), np.array([1.0, 2.0])):
        with pytest.raises(ValueError, match="1-D int"):
            canaries.prefix_buffer([bad], 0)
    with pytest.raises(ValueError, match="at least one byte"):
        canaries.prefix_buffer([b""], 0)


@pytest.mark.parametrize("name", ["gru", "transformer"])
def test_greedy_decode_of_bytes_and_tokens(mesh, name):
    """Raw-byte (invalid utf-8) and token-array prefixes decode as the naive loop does, and as the forward
    method does; a str and its tokens decode alike."""
    g, p = _lm(name, seed=5)
    raw = b"\x80\xc3 copy of " + bytes(range(250, 256))
    prefixes = [raw, canaries.encode(PREFIX), PREFIX, np.array([200, 3], np.int32)]
    got, first = extraction.greedy_decode(g, p, prefixes, 5, mesh, with_first_probs=True)
    ref, ref_first = extraction.greedy_decode(g, p, prefixes, 5, mesh, with_first_probs=True, method="forward")
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(first, ref_first, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(got[1], got[2])
    for row, prefix in zip(got, prefixes, strict=True):
        assert row.tolist() == _naive_greedy(g, p, prefix, 5)
    with pytest.raises(ValueError, match="method="):
        extraction.greedy_decode(g, p, prefixes, 5, mesh, method="beam")


def test_first_byte_probs_match_softmax_of_naive_forward(mesh):
    g, p = _lm("lstm", seed=4)
    prefixes = [PREFIX, "ab"]
    got, first_CxV = extraction.greedy_decode(g, p, prefixes, 2, mesh, with_first_probs=True)
    for row, prefix in enumerate(prefixes):
        tokens = canaries.encode(prefix)[None].astype(np.int32)
        tokens = np.concatenate([tokens, np.zeros((1, 1), np.int32)], axis=1)
        want_V = np.asarray(jax.nn.softmax(_forward(g, p, {"tokens": tokens})[0, len(prefix) - 1]))
        np.testing.assert_allclose(first_CxV[row], want_V, rtol=1e-5, atol=1e-7)
        assert got[row, 0] == np.argmax(want_V)


def test_greedy_decode_respects_transformer_length(mesh):
    g, p = _lm("transformer", seq_len=30)
    extraction.check_input_len(g, p, 30, "30 inputs")  # 28 + 3 - 1 = 30 inputs (3 bytes after PREFIX) fit.
    with pytest.raises(ValueError, match="at most 30"):
        extraction.greedy_decode(g, p, [PREFIX], 4, mesh)


# ------------------------------------------------------------------------------------------------------------
# Exposure.
# ------------------------------------------------------------------------------------------------------------
class Bigram(nnx.Module):
    """A hand-made causal LM: the logits of the next byte are a row of a table, picked by the current byte."""

    def __init__(self, table_VxV: np.ndarray):
        self.table = nnx.Param(jnp.asarray(table_VxV, jnp.float32))

    def __call__(self, inputs_BxL, keys_B=None):
        return self.table[...][inputs_BxL]


def _rank(ll_R: np.ndarray, i: int) -> int:
    return 1 + int((ll_R > ll_R[i]).sum())


def test_exposure_tree_matches_hand_model_exactly(mesh):
    rng = np.random.default_rng(0)
    table = rng.normal(size=(256, 256))
    g, p = nnx.split(Bigram(table), nnx.Param)
    d = 3
    ll = exposure.all_secret_log_likelihoods(g, p, [PREFIX, "code 7"], d, mesh)
    assert ll.shape == (2, 10**d)
    logp = _log_softmax_np(table.astype(np.float32))
    for c, last in enumerate([ord(" "), ord("7")]):
        want = np.zeros(10**d)
        for v in range(10**d):
            prev = last
            for ch in f"{v:0{d}d}":
                want[v] += logp[prev, ord(ch)]
                prev = ord(ch)
        np.testing.assert_allclose(ll[c], want, rtol=1e-5, atol=1e-5)
        for v in range(0, 10**d, 37):
            assert exposure.rank_exposure(ll[c], v)["rank"] == _rank(want, v)


def _brute_force(g, p, prefix: str, d: int) -> np.ndarray:
    """Log-likelihood of every secret from one forward pass over its full canary text."""
    tokens = np.stack([canaries.encode(f"{prefix}{v:0{d}d}.") for v in range(10**d)])
    logp = _log_softmax_np(_forward(g, p, {"tokens": tokens}))
    start = len(canaries.encode(prefix))
    cols = np.arange(start - 1, start - 1 + d)
    return np.take_along_axis(logp[:, cols], tokens[:, cols + 1, None], axis=-1)[..., 0].sum(1)


@pytest.mark.parametrize(
    "name,method",
    [
        ("lstm", "recurrent"),
        ("lstm", "forward"),
        ("transformer", "forward"),
        ("gru", "incremental"),
        ("transformer", "incremental"),
    ],
)
def test_exposure_tree_matches_brute_force(mesh, name, method):
    g, p = _lm(name, depth=2 if name == "lstm" else 1, seed=1)
    d = 3
    prefixes = [PREFIX, "key xy is "]
    ll = exposure.all_secret_log_likelihoods(g, p, prefixes, d, mesh, method=method, batch_size=64)
    for c, prefix in enumerate(prefixes):
        want = _brute_force(g, p, prefix, d)
        np.testing.assert_allclose(ll[c], want, rtol=1e-5, atol=1e-5)
        order = np.argsort(-want)
        for v in [*order[[0, 1, 9, 99, 500, 999]], 123, 0, 999]:
            assert exposure.rank_exposure(ll[c], v)["rank"] == _rank(want, v)


def test_exposure_of_token_prefixes_and_method_checks(mesh):
    """Bytes and token prefixes score as their text does; the transformer's tree equals "forward" at d = 4;
    the hand model has no incremental decoding."""
    g, p = _lm("transformer", depth=2, seed=2)
    prefixes = [PREFIX, canaries.encode("key xy is "), b"\xff\x00 is "]
    ll = exposure.all_secret_log_likelihoods(g, p, prefixes, 4, mesh, method="incremental")
    ref = exposure.all_secret_log_likelihoods(g, p, prefixes, 4, mesh, method="forward", batch_size=512)
    np.testing.assert_allclose(ll, ref, rtol=1e-5, atol=1e-5)
    text = exposure.all_secret_log_likelihoods(g, p, [PREFIX, "key xy is ", b"\xff\x00 is "], 4, mesh)
    np.testing.assert_array_equal(ll, text)
    bigram = nnx.split(Bigram(np.zeros((256, 256))), nnx.Param)
    for method in ("incremental", "recurrent"):
        with pytest.raises(ValueError, match="incremental decoding"):
            exposure.all_secret_log_likelihoods(*bigram, [PREFIX], 2, mesh, method=method)
    with pytest.raises(ValueError, match="at most 40"):
        exposure.all_secret_log_likelihoods(g, p, ["x" * 38], 4, mesh)


def test_rank_ties_and_ceiling():
    ll = np.array([1.0, 3.0, 3.0, 2.0])
    assert exposure.rank_exposure(ll, 1) == {"rank": 1.0, "ties": 1.0, "exposure": 2.0, "secret_nll": -3.0}
    assert exposure.rank_exposure(ll, 3)["rank"] == 3.0
    assert np.isnan(exposure.rank_exposure(np.array([np.nan, 1.0]), 1)["exposure"])  # not "rank 1"
    assert exposure.ceiling(6) == pytest.approx(19.9315685693)
    assert exposure.ceiling(3) == pytest.approx(np.log2(1000))


def test_skewnorm_exposure_on_a_skewnorm_population():
    # A population of 10^5 "secret NLLs" drawn from a skew-normal plays the whole space R.
    rng = np.random.default_rng(0)
    population = stats.skewnorm.rvs(5.0, loc=20.0, scale=3.0, size=100_000, random_state=rng)
    sample = rng.choice(population, 10_000, replace=False)
    ordered = np.sort(population)
    # Tolerances: 4 standard deviations of (approx - exact) over 100 seeds of this setup (0.26, 0.11, 0.03,
    # 0.01 bits at these quantiles; the mean error is < 0.01 bits: the estimate is unbiased, only the tail fit
    # is noisy).
    for q, tol in [(0.001, 1.05), (0.01, 0.42), (0.1, 0.13), (0.5, 0.05)]:
        nll = ordered[int(q * len(population))]
        exact = np.log2(len(population)) - np.log2(1 + (population < nll).sum())
        assert abs(exposure.skewnorm_exposure(nll, sample) - exact) < tol, q


def test_skewnorm_exposure_agrees_with_enumeration(mesh):
    g, p = _lm("lstm", width=32)  # the tiny run's LSTM: shares the compiled tree
    ll = exposure.all_secret_log_likelihoods(g, p, [PREFIX], 6, mesh)[0]
    nll_sample = -ll[np.random.default_rng(0).choice(10**6, 10_000, replace=False)]
    order = np.argsort(-ll)
    # Where the 10^4-secret sample has mass (CDF >= 1e-2) the fit matches enumeration to 0.41 bits over six
    # random models (0.25 here). Deeper in the tail it extrapolates: errors of 1-9 bits at ranks <= 1000 of
    # 10^6, which is why the evaluator enumerates exactly.
    for rank in (10**4, 10**5, 5 * 10**5):
        v = order[rank - 1]
        exact = exposure.rank_exposure(ll, v)["exposure"]
        assert exact == pytest.approx(np.log2(10**6 / rank))
        assert abs(exposure.skewnorm_exposure(-ll[v], nll_sample) - exact) < 0.5, rank
    # Direction: the most likely secret gets a high exposure, the least likely about 0.
    assert exposure.skewnorm_exposure(-ll[order[0]], nll_sample) > 10.0
    assert exposure.skewnorm_exposure(-ll[order[-1]], nll_sample) < 0.01


def test_memorized_canary_is_extracted_and_maximally_exposed(mesh):
    """A tiny LSTM fitted to one canary: greedy decoding returns its secret, exposure hits the ceiling."""
    meta = {
        "secret_digits": 6,
        "canary_repeats": 1,
        "inserted": [{**canaries_lib.make_canary("abcde", "804215"), "ids": [0], "offsets": [0]}],
        "controls": [canaries_lib.make_canary("qwert", "377160")],
    }
    text = canaries.encode(meta["inserted"][0]["text"])
    tokens = np.zeros((8, 40), np.int32)
    tokens[:, : len(text)] = text
    arrays = {"tokens": tokens, "token_mask": np.arange(39)[None, :].repeat(8, 0) < len(text) - 1}
    g, p = _lm("lstm", width=32)
    tx = optax.adam(1e-2)

    @jax.jit
    def step(p, opt):
        grads = jax.grad(lambda p: models.per_example_loss(g, p, arrays)[0].mean())(p)
        updates, opt = tx.update(grads, opt, p)
        return optax.apply_updates(p, updates), opt

    opt = tx.init(p)
    for _ in range(150):
        p, opt = step(p, opt)
    ctx = EvalContext(g, p, mesh, _dataset(arrays, meta={"canaries": meta}), batch_size=8)
    got = extraction.evaluate(ctx)
    assert got["inserted_extraction_rate"] == 1.0 and got["controls_extraction_rate"] == 0.0
    assert got["inserted_decoded"][0] == "804215."
    exp = exposure.evaluate(ctx)
    assert exp["inserted_rank"][0] == 1.0
    assert exp["inserted_exposure"][0] == pytest.approx(exposure.ceiling(6))
    assert exp["controls_exposure"][0] < exp["inserted_exposure"][0]
    # Beyond max_exact_digits: skew-normal only, from forward passes; the secret's NLL is the same number.
    approx = exposure.evaluate(ctx, max_exact_digits=5, skewnorm_sample=200, batch_size=64)
    assert np.isnan(approx["inserted_rank"]).all()
    np.testing.assert_allclose(approx["inserted_secret_nll"], exp["inserted_secret_nll"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(approx["inserted_exposure"], approx["inserted_exposure_skewnorm"])
    assert approx["inserted_exposure"][0] > approx["controls_exposure"][0]


# ------------------------------------------------------------------------------------------------------------
# Membership inference.
# ------------------------------------------------------------------------------------------------------------
def test_auc_matches_sklearn_and_pairwise_count():
    rng = np.random.default_rng(0)
    s_m = np.round(rng.normal(0.5, 1.0, 60), 1)  # rounding makes ties
    s_n = np.round(rng.normal(0.0, 1.0, 90), 1)
    got = mia.roc_metrics(s_m, s_n)
    labels = np.r_[np.ones(60), np.zeros(90)]
    assert got["mia_auc"] == pytest.approx(metrics.roc_auc_score(labels, np.r_[s_m, s_n]))
    pairwise = ((s_m[:, None] > s_n[None, :]) + 0.5 * (s_m[:, None] == s_n[None, :])).mean()
    assert got["mia_auc"] == pytest.approx(pairwise)
    assert got["mia_num_members"] == 60 and got["mia_num_nonmembers"] == 90


def test_tpr_at_fpr_hand_example():
    members = np.array([10.0, 9.0, 8.0, 3.0, 2.0])
    nonmembers = np.array([9.0, 7.0, 6.0, 5.0, 4.0, 1.0, 0.0, -1.0, -2.0, -3.0])
    # ROC points (threshold: fpr, tpr): 10: (0, .2); 9 (a tie): (.1, .4); 8: (.1, .6); 7: (.2, .6); ...;
    # 3: (.5, .8); 2: (.5, 1).
    fpr, tpr = mia.roc(members, nonmembers)
    assert mia.tpr_at_fpr(fpr, tpr, 0.05) == pytest.approx(0.2)
    assert mia.tpr_at_fpr(fpr, tpr, 0.1) == pytest.approx(0.6)  # FPR <= target: the point on the target counts.
    assert mia.tpr_at_fpr(fpr, tpr, 0.05, interpolate=True) == pytest.approx(0.3)
    assert mia.tpr_at_fpr(fpr, tpr, 0.15, interpolate=True) == pytest.approx(0.6)
    got = mia.roc_metrics(members, nonmembers)
    assert got["mia_tpr_at_1pct_fpr"] == pytest.approx(0.2)  # only FPR = 0 is <= 1% with 10 non-members
    assert got["mia_tpr_at_0.1pct_fpr"] == pytest.approx(0.2)
    assert got["mia_balanced_accuracy"] == pytest.approx((1.0 + 1.0 - 0.5) / 2)  # threshold 2


def test_calibrated_attack_sign():
    # Target fits the member better than a reference that never saw it; the non-member equally badly.
    s_member = mia.calibrated_scores(loss_target_N=np.array([1.0]), loss_ref_N=np.array([2.0]))
    s_nonmember = mia.calibrated_scores(loss_target_N=np.array([2.0]), loss_ref_N=np.array([2.0]))
    assert s_member[0] > s_nonmember[0]
    # A member that is just easy (low loss under both) scores no higher than a non-member.
    assert mia.calibrated_scores(np.array([0.5]), np.array([0.5]))[0] == s_nonmember[0]
    assert mia.roc_metrics(s_member, s_nonmember)["mia_auc"] == 1.0
    assert mia.loss_scores(np.array([1.0]))[0] > mia.loss_scores(np.array([2.0]))[0]


def test_plot_roc_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "roc.png"
    mia.plot_roc({"loss": (rng.normal(1, 1, 50), rng.normal(0, 1, 200))}, str(path), title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------------------------------
# Canary bookkeeping and every evaluator on a tiny trained run.
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, mesh):
    cfg = tiny_config("lstm", train=dict(num_epochs=1))
    result = loop.train(cfg, str(tmp_path_factory.mktemp("run")), mesh=mesh)
    dataset = sources.build_dataset(cfg.data)
    g, reference = models.build(cfg.model, seed=cfg.seed + 1, seq_len=cfg.data.seq_len)
    return EvalContext(g, result.state.params, mesh, dataset, batch_size=32, reference_params=reference)


def _secret_bytes(seqs: dict) -> np.ndarray:
    targets = seqs["tokens"][:, 1:]
    return targets[seqs["secret_mask"]].reshape(len(targets), -1)


def test_canary_sequences_and_prune_fraction(trained):
    ds = trained.dataset
    meta = ds.meta["canaries"]
    members = canaries.member_sequences(ds)
    controls = canaries.control_sequences(ds, seed=0)
    for seqs, records in ((members, meta["inserted"]), (controls, meta["controls"])):
        want = np.stack([canaries.encode(records[i]["secret"]) for i in seqs["canary"]])
        np.testing.assert_array_equal(_secret_bytes(seqs), want)
    assert len(controls["tokens"]) == len(meta["controls"]) * meta["canary_repeats"]
    assert ds.train["is_canary"][members["row"]].all()

    canary_ids = np.flatnonzero(ds.train["is_canary"])
    plain_ids = np.flatnonzero(~ds.train["is_canary"])[:6]
    first = meta["inserted"][0]["ids"]
    got = canaries.prune_canary_fraction(np.r_[first, first, plain_ids], ds)
    assert got["canary_fraction_of_pruned"] == pytest.approx(len(first) / (len(first) + 6))
    assert got["canary_copies_pruned_fraction"] == pytest.approx(len(first) / len(canary_ids))
    assert got["canaries_fully_pruned"] == 1.0
    assert canaries.prune_canary_fraction(np.array([], np.int64), ds)["canary_fraction_of_pruned"] == 0.0
    keep = np.setdiff1d(np.arange(ds.num_train), plain_ids)
    np.testing.assert_array_equal(canaries.pruned_from_keep(keep, ds.num_train), plain_ids)


def test_every_evaluator_on_a_trained_run(trained):
    out = evaluate(trained, [n for n in EVALUATORS if n != "exposure_inserted"])  # a part of "exposure"
    for key in (
        "heldout_perplexity",
        "inserted_extraction_rate",
        "inserted_exposure_mean",
        "mia_auc",
        "mia_calibrated_auc",
        "mia_canary_secret_auc",
        "exposure_ceiling",
    ):
        assert key in out, key
    for key, value in out.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "US":
            continue
        assert np.all(np.isfinite(np.asarray(value, np.float64))), key
    assert 1.0 < out["heldout_perplexity"] < 256.0
    assert (out["inserted_exposure"] <= out["exposure_ceiling"] + 1e-9).all()
    with pytest.raises(ValueError, match="unknown evaluators"):
        evaluate(trained, ["bleu"])
    no_canaries = EvalContext(
        trained.graphdef,
        trained.params,
        trained.mesh,
        _dataset(trained.dataset.heldout, meta={"source": "pydoc"}),
        batch_size=32,
    )
    with pytest.raises(ValueError, match="no canaries"):
        EVALUATORS["exposure"](no_canaries)
