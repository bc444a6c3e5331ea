"""Span-level tracking (``tracker.spans``): span ids from the canaries, span losses, the span tracker's counts, its
layouts and resumption, its offline scores, and that spans off changes nothing.

References are numpy loops written from the contracts (``losses.span_nll``, ``tracker.update_spans``, the rule of
``gdc.forgetting``: learned below eps_low, forgotten above eps_high), not from the jax code.
"""

import functools
import json

import jax
import numpy as np
import pytest
from conftest import tiny_config

from gdc import losses, models, sharding
from gdc import tracker as tracker_lib
from gdc.data import sources
from gdc.data.pipeline import EpochIterator
from gdc.errors import ConfigError
from gdc.scoring import workdir as scoring
from gdc.tracker import ExampleTracker, TrackerConfig
from gdc.train import fingerprint, loop, span_select
from gdc.train import setup as setup_lib

CFG = TrackerConfig(criterion="loss", eps_low=0.75, eps_high=1.25, early_epochs=2)


def _run(cfg, workdir, n_devices=8, **kw):
    return loop.train(cfg, str(workdir), mesh=sharding.make_mesh(jax.devices()[:n_devices]), **kw)


def _span_config(spans="canary_secrets", **tracker):
    """The tiny LSTM with 12 canary copies; its secrets' losses (5.5-9) cross these thresholds both ways."""
    return tiny_config(
        "lstm",
        data=dict(num_canaries=4, canary_repeats=3),
        train=dict(num_epochs=3),
        tracker=dict(spans=spans, eps_low=6.0, eps_high=7.0, **tracker),
    )


def _rule_np(loss_T: np.ndarray, eps_low: float, eps_high: float) -> tuple[int, int]:
    """(learn, forget) events of one row's observations (NaN: not observed), by a plain loop."""
    learned, learn, forget = False, 0, 0
    for x in loss_T:
        if np.isnan(x):
            continue
        if not learned and x < eps_low:
            learned, learn = True, learn + 1
        elif learned and x > eps_high:
            learned, forget = False, forget + 1
    return learn, forget


# ------------------------------------------------------------------------------------------------------------
# Span ids and span losses.
# ------------------------------------------------------------------------------------------------------------
def test_canary_spans_cover_the_secret_digits():
    cfg = tiny_config("lstm")
    dataset = sources.build_dataset(cfg.data)
    span_NxL = sources.span_ids(dataset, "canary_secrets")
    tokens = dataset.train["tokens"]
    copies = [(row, c["secret"]) for c in dataset.meta["canaries"]["inserted"] for row in c["ids"]]
    assert span_NxL.shape == dataset.train["token_mask"].shape and span_NxL.max() == 1
    assert sorted(np.flatnonzero(span_NxL.any(1))) == sorted(row for row, _ in copies)
    for row, secret in copies:  # target t predicts token t + 1: the span's targets are the secret's bytes
        targets = np.flatnonzero(span_NxL[row])
        assert bytes(tokens[row, targets + 1].astype(np.uint8)).decode() == secret
    assert sources.span_ids(dataset, "none") is None


def test_span_nll_matches_numpy():
    rng = np.random.default_rng(0)
    b, seq, v, sp = 5, 12, 7, 3
    logits = rng.normal(size=(b, seq, v)).astype(np.float32)
    targets = rng.integers(0, v, size=(b, seq))
    mask = rng.random((b, seq)) < 0.8
    span = rng.integers(0, sp + 1, size=(b, seq)).astype(np.int8)
    span[0] = 0  # an example without spans
    loss, acc, valid = jax.device_get(losses.span_nll(logits, targets, mask, span, sp))
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for i in range(b):
        for s in range(1, sp + 1):
            ts = [t for t in range(seq) if span[i, t] == s and mask[i, t]]
            assert valid[i, s - 1] == bool(ts)
            want_loss = np.mean([-logp[i, t, targets[i, t]] for t in ts]) if ts else 0.0
            want_acc = np.mean([logits[i, t].argmax() == targets[i, t] for t in ts]) if ts else 0.0
            np.testing.assert_allclose(loss[i, s - 1], want_loss, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(acc[i, s - 1], want_acc, rtol=1e-6)


def test_span_loss_of_the_model_matches_its_token_nll():
    cfg = tiny_config("lstm", tracker=dict(spans="canary_secrets"))
    dataset = sources.build_dataset(cfg.data)
    graphdef, params = setup_lib.build_model(cfg, dataset)
    span_NxL = sources.span_ids(dataset, "canary_secrets")
    rows = np.flatnonzero(span_NxL.any(1))[:3].tolist() + [0, 1]
    batch = {k: dataset.train[k][rows] for k in ("tokens", "token_mask")} | {"span": span_NxL[rows]}
    loss_B, acc_B, (loss_BxSp, _, valid_BxSp) = models.per_example_span_loss(graphdef, params, batch, None, 1)
    plain_B, plain_acc_B = models.per_example_loss(graphdef, params, batch, None)
    np.testing.assert_array_equal(loss_B, plain_B)
    np.testing.assert_array_equal(acc_B, plain_acc_B)
    logits = np.asarray(models.forward(graphdef, params, batch), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for j, row in enumerate(rows):
        ts = np.flatnonzero(span_NxL[row] & dataset.train["token_mask"][row])
        assert valid_BxSp[j, 0] == (len(ts) > 0)
        if len(ts):
            want = -np.mean([logp[j, t, dataset.train["tokens"][row, t + 1]] for t in ts])
            np.testing.assert_allclose(loss_BxSp[j, 0], want, rtol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# The span tracker against a numpy loop, in every layout.
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["replicated", "data", "data+mesh", "data+mesh+local", "one_device"])
def test_span_tracker_matches_numpy_loop(layout):
    n, sp, b, epochs = 37, 3, 16, 4  # n not a multiple of the devices: padding rows and capacity rows
    devices = jax.devices()[:1] if layout == "one_device" else jax.devices()
    mesh = sharding.make_mesh(devices)
    cfg = TrackerConfig(**{**CFG.__dict__, "sharding": layout.split("+")[0].replace("one_device", "replicated")})
    tracker_mesh = mesh if layout.startswith("data+mesh") else None
    local = layout.endswith("local")  # each device's batch rows are ids of its own block of example rows
    copies = tracker_lib.pending_copies(cfg, mesh.size, local) if tracker_mesh is not None else 1
    tracker = ExampleTracker.create(n * sp, multiple_of=mesh.size * sp, deferred=True, copies=copies)
    tracker_sh = sharding.tracker_sharding(mesh, cfg.sharding)
    tracker = sharding.put_tree(tracker, tracker_sh)
    update = jax.jit(
        functools.partial(tracker_lib.update_spans, cfg=cfg, unique=True, mesh=tracker_mesh, local=local),
        donate_argnums=0,
        out_shardings=tracker_sh,
    )
    fold = jax.jit(functools.partial(tracker_lib.fold, cfg=cfg), donate_argnums=0, out_shardings=tracker_sh)
    rng = np.random.default_rng(1)
    present_NxSp = rng.random((n, sp)) < 0.6  # spans an example has
    obs = np.full((epochs, n, sp), np.nan, np.float32)  # the observations, one per (epoch, span) at most
    step = 0
    with jax.set_mesh(mesh):
        for epoch in range(epochs):
            if local:  # device k takes b / d rows per batch from ids [k * block, (k + 1) * block)
                d, block = mesh.size, -(-n // mesh.size)
                per = b // d
                blocks = [rng.permutation(np.arange(k * block, min((k + 1) * block, n))) for k in range(d)]
                length = -(-block // per) * per
                blocks = [np.concatenate([x, np.full(length - len(x), n)]).reshape(-1, per) for x in blocks]
                order = np.concatenate(blocks, axis=1).reshape(-1)
            else:
                order = np.concatenate([rng.permutation(n), np.full(-n % b, n)])
            for idx_B in order.reshape(-1, b):
                valid_B = idx_B < n
                loss_BxSp = rng.choice([0.5, 0.75, 1.0, 1.25, 1.5], size=(b, sp)).astype(np.float32)
                span_ok = np.where(valid_B[:, None], present_NxSp[np.minimum(idx_B, n - 1)], False)
                for i, s in zip(*np.nonzero(span_ok), strict=True):
                    obs[epoch, idx_B[i], s] = loss_BxSp[i, s]
                batch = {"idx": idx_B.astype(np.int32), "loss": loss_BxSp, "valid": span_ok, "mask": valid_B}
                batch = sharding.put_batch(batch, mesh)
                acc = np.zeros((b, sp), np.float32)
                tracker = update(tracker, batch["idx"], batch["loss"], acc, batch["valid"], batch["mask"], step, epoch)
                step += 1
            tracker = fold(tracker)
    got = tracker_lib.to_numpy(tracker)
    for i in range(n):
        for s in range(sp):
            row = obs[:, i, s]
            learn, forget = _rule_np(row, CFG.eps_low, CFG.eps_high)
            r = i * sp + s
            assert (got["learn_N"][r], got["forget_N"][r]) == (learn, forget), (i, s)
            assert got["seen_N"][r] == np.sum(~np.isnan(row))
            early = row[: CFG.early_epochs]
            np.testing.assert_allclose(got["loss_sum_early_N"][r], np.nansum(early), rtol=1e-6)
            seen = np.flatnonzero(~np.isnan(row))
            np.testing.assert_array_equal(got["last_loss_N"][r], row[seen[-1]] if len(seen) else np.nan)


# ------------------------------------------------------------------------------------------------------------
# Runs: artefacts and offline scores, devices and layouts, resumption, spans off.
# ------------------------------------------------------------------------------------------------------------
def _span_fields(result):
    return tracker_lib.to_numpy(result.span_tracker)


def test_span_run_artefacts_and_scores(tmp_path):
    cfg = _span_config()
    result = _run(cfg, tmp_path)
    loss_ExNxSp = scoring.load_span_loss_matrix(str(tmp_path))
    n = result.tracker.num_examples
    assert loss_ExNxSp.shape == (3, n, 1)
    span_NxL = sources.span_ids(sources.build_dataset(cfg.data), "canary_secrets")
    has_N = span_NxL.any(1)
    assert np.isfinite(loss_ExNxSp[:, has_N]).all() and np.isnan(loss_ExNxSp[:, ~has_N]).all()
    fields = _span_fields(result)
    eps_low, eps_high = cfg.tracker.eps_low, cfg.tracker.eps_high
    want = np.array([_rule_np(loss_ExNxSp[:, i, 0], eps_low, eps_high) for i in range(n)])
    np.testing.assert_array_equal(fields["learn_N"], want[:, 0])  # one visit per epoch: the file is what it read
    np.testing.assert_array_equal(fields["forget_N"], want[:, 1])
    assert want[:, 0].sum() > 0 and want[:, 1].sum() > 0  # the run has both kinds of events
    arrays, summary = scoring.score_run(str(tmp_path))
    np.testing.assert_array_equal(arrays["span_forget_NxSp"][:, 0], want[:, 1])
    d_want = np.where(has_N, loss_ExNxSp[0, :, 0], np.nan)  # early_epochs = 1
    np.testing.assert_allclose(arrays["span_d_N"], d_want, rtol=1e-6)
    m_want = np.where(has_N, want[:, 1] / 2.0, np.nan)  # forget events over E - 1 transitions
    np.testing.assert_allclose(arrays["span_m_N"], m_want)
    np.testing.assert_allclose(arrays["span_m_mean_N"], m_want)
    assert summary["spans"]["examples_with_spans"] == has_N.sum()
    # The logged span_loss of each step: the mean over its batch's spans of the loss the epoch file holds for them
    # (each id is visited once an epoch, at the step whose pre-update loss the file keeps).
    it = EpochIterator({"x": np.zeros((n, 1))}, cfg.train.batch_size, cfg.seed)
    logged = {m["step"]: m for m in map(json.loads, open(tmp_path / "metrics.jsonl")) if "span_loss" in m}
    for epoch in range(3):
        for t in range(it.steps_per_epoch):
            idx_B = it.batch(epoch, t)["index"]
            losses_B = loss_ExNxSp[epoch, idx_B[idx_B < n], 0]
            want = np.nanmean(losses_B) if np.isfinite(losses_B).any() else 0.0
            np.testing.assert_allclose(logged[epoch * it.steps_per_epoch + t + 1]["span_loss"], want, rtol=1e-6)


@pytest.mark.slow  # a tiny LSTM run with scoring passes
def test_span_losses_from_scoring_passes(tmp_path):
    """With ``tracker.scoring_passes`` the span tracker reads the span losses of each fixed-parameter pass: its counts
    are the rule over the saved pass rows, the last pass is the span NLL at the final params (numpy from the logits),
    and the offline span m reads the pass rows."""
    cfg = _span_config(scoring_passes=2)
    result = _run(cfg, tmp_path)
    dataset = sources.build_dataset(cfg.data)
    span_NxL = sources.span_ids(dataset, "canary_secrets")
    has_N, n = span_NxL.any(1), dataset.num_train
    loss_PxNxSp = scoring.load_span_loss_matrix(str(tmp_path), "passes")
    assert loss_PxNxSp.shape == (6, n, 1)  # 3 epochs x 2 passes
    assert np.isfinite(loss_PxNxSp[:, has_N]).all() and np.isnan(loss_PxNxSp[:, ~has_N]).all()
    fields = _span_fields(result)
    want = np.array([_rule_np(loss_PxNxSp[:, i, 0], 6.0, 7.0) for i in range(n)])
    np.testing.assert_array_equal(fields["learn_N"], want[:, 0])
    np.testing.assert_array_equal(fields["forget_N"], want[:, 1])
    np.testing.assert_array_equal(fields["seen_N"][has_N], 6)
    assert want[:, 0].sum() > 0
    graphdef, _ = setup_lib.build_model(cfg, dataset)
    rows = np.flatnonzero(has_N)
    batch = {k: dataset.train[k][rows] for k in ("tokens", "token_mask")}
    logits = np.asarray(models.forward(graphdef, jax.device_get(result.state.params), batch), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for j, row in enumerate(rows):
        ts = np.flatnonzero(span_NxL[row] & dataset.train["token_mask"][row])
        ref = -np.mean([logp[j, t, dataset.train["tokens"][row, t + 1]] for t in ts])
        np.testing.assert_allclose(loss_PxNxSp[-1, row, 0], ref, rtol=1e-4)
    arrays, _ = scoring.score_run(str(tmp_path))
    np.testing.assert_allclose(arrays["span_m_N"], np.where(has_N, want[:, 1] / 5.0, np.nan))  # 5 transitions


def test_span_tracker_same_on_one_and_eight_devices_and_sharded(tmp_path):
    one = _run(_span_config(), tmp_path / "one", n_devices=1)
    eight = _run(_span_config(), tmp_path / "eight")
    sharded = _run(_span_config(sharding="data"), tmp_path / "sharded")
    assert all(x.sharding.spec == jax.sharding.PartitionSpec("data") for x in jax.tree.leaves(sharded.span_tracker))
    a, b, c = (_span_fields(r) for r in (one, eight, sharded))
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
        np.testing.assert_array_equal(b[k], c[k], err_msg=k)  # the layout changes nothing


def test_interrupted_and_resumed_span_run_equals_uninterrupted(tmp_path):
    cfg = _span_config(sharding="data")
    whole = _run(cfg, tmp_path / "whole")
    spe = jax.device_get(whole.state.step) // 3
    part = _run(cfg, tmp_path / "parts", max_steps=spe + spe // 2)
    assert int(part.state.step) < int(whole.state.step)
    resumed = _run(cfg, tmp_path / "parts")
    a, b = _span_fields(whole), _span_fields(resumed)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for e in range(3):
        want = np.load(tmp_path / "whole" / "trackers" / f"span_epoch_{e:04d}.npz")["loss_NxSp"]
        got = np.load(tmp_path / "parts" / "trackers" / f"span_epoch_{e:04d}.npz")["loss_NxSp"]
        np.testing.assert_array_equal(want, got)


def test_spans_leave_the_sequence_run_unchanged(tmp_path):
    off = _run(_span_config(spans="none"), tmp_path / "off")
    on = _run(_span_config(), tmp_path / "on")
    assert off.span_tracker is None and not list((tmp_path / "off" / "trackers").glob("span_*"))
    a, b = tracker_lib.to_numpy(off.tracker), tracker_lib.to_numpy(on.tracker)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for x, y in zip(jax.tree.leaves(off.state.params), jax.tree.leaves(on.state.params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_span_config_errors():
    with pytest.raises(ConfigError, match="tracker.spans='canary_secrets'.*data.source='pydoc_canaries'"):
        tiny_config("mlp", tracker=dict(spans="canary_secrets"))
    with pytest.raises(ConfigError, match="tracker.spans='words' is not one of"):
        tiny_config("lstm", tracker=dict(spans="words"))


@pytest.mark.slow  # 22 s on 2 cores
def test_span_tracker_with_aligned_shards_equals_replicated(tmp_path):
    # data.shards = 8 = devices: each device's batch rows are its own rows of both trackers (no exchange at all).
    shards = dict(num_canaries=4, canary_repeats=3, shards=8)
    local = _run(
        tiny_config("lstm", data=shards, tracker=_span_config().tracker.__dict__ | {"sharding": "data"}), tmp_path / "a"
    )
    repl = _run(tiny_config("lstm", data=shards, tracker=_span_config().tracker.__dict__), tmp_path / "b")
    a, b = _span_fields(local), _span_fields(repl)
    assert a["seen_N"].sum() > 0
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow  # 30 s on 2 cores
@pytest.mark.parametrize("on_device", [0, 1])
def test_upsampled_deferred_spans_equal_immediate_updates(tmp_path, on_device):
    """Canary rows visited 1-3 times an epoch (copies sometimes in one batch): the deferred span tracker records each
    copy into the slot of its occurrence and folds to the bits of the immediate update, on host batches and on the
    resident path."""
    n = sources.build_dataset(_span_config().data).num_train
    mult_N = np.random.default_rng(0).integers(1, 4, n)
    np.save(tmp_path / "mult.npy", mult_N)
    common = dict(multiplicity_path=str(tmp_path / "mult.npy"), num_epochs=2)

    def config(**tracker):
        c = _span_config(**tracker)
        return tiny_config(
            "lstm", data=c.data.__dict__ | {"on_device": on_device}, train=common, tracker=c.tracker.__dict__
        )

    want = _run(config(defer=False), tmp_path / "immediate")
    got = _run(config(), tmp_path / "deferred")
    assert want.span_tracker.pending is None and got.span_tracker.slots == 3
    a, b = _span_fields(want), _span_fields(got)
    assert (a["seen_N"] > 2).any()  # some secret was read more than once an epoch
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_workdir_recorded_before_spans_refuses_a_span_run(tmp_path):
    """A workdir whose fingerprint predates ``tracker.spans`` ran without spans: a span run there is refused (its
    checkpoints hold one tracker), a run without spans is not."""
    fingerprint.check(_span_config(spans="none"), str(tmp_path))
    path = tmp_path / fingerprint.FILE
    recorded = json.loads(path.read_text())
    del recorded["fields"]["tracker.spans"]
    path.write_text(json.dumps(recorded))
    with pytest.raises(ConfigError, match="tracker.spans: 'none' -> 'canary_secrets'"):
        fingerprint.check(_span_config(), str(tmp_path))
    fingerprint.check(_span_config(spans="none"), str(tmp_path))


# ------------------------------------------------------------------------------------------------------------
# top_k_drop: spans for unmarked text, chosen after a warm-up.
# ------------------------------------------------------------------------------------------------------------
def _top_k_drop_np(first, later, k):
    """Per row, a plain loop: the k valid tokens with the largest first - later (earlier position on ties)."""
    out = np.zeros(first.shape, np.int8)
    for i in range(first.shape[0]):
        cand = [
            (-(first[i, t] - later[i, t]), t) for t in range(first.shape[1]) if np.isfinite(first[i, t] - later[i, t])
        ]
        chosen = sorted(t for _, t in sorted(cand)[:k])
        for s, t in enumerate(chosen, start=1):
            out[i, t] = s
    return out


def test_top_k_drop_matches_numpy_loop():
    rng = np.random.default_rng(3)
    first = rng.choice([0.5, 1.0, 2.0, 3.0], size=(40, 12)).astype(np.float32)  # many ties
    later = rng.choice([0.5, 1.0, 2.0], size=(40, 12)).astype(np.float32)
    first[rng.random((40, 12)) < 0.2] = np.nan
    later[5, :10] = np.nan  # a row with 2 valid tokens < k
    for k in (1, 3, 5):
        np.testing.assert_array_equal(span_select.top_k_drop(first, later, k), _top_k_drop_np(first, later, k))


def _top_k_config(**tracker):
    tracker = dict(spans="top_k_drop", span_k=3) | tracker
    return tiny_config("lstm", data=dict(source="pydoc"), train=dict(num_epochs=3), tracker=tracker)


@pytest.mark.slow  # two runs of the tiny LSTM: 25 s on 2 idle cores, 73 s loaded
def test_top_k_drop_run_chooses_after_warmup_and_tracks_after(tmp_path):
    """Stopped at the end of the warm-up epoch: the saved token losses are the numpy NLL at its params and the span
    ids the numpy choice from the two saved epochs; resumed: nothing tracked before, the chosen tokens after."""
    cfg = _top_k_config(span_warmup=1)
    dataset = sources.build_dataset(cfg.data)
    n = dataset.num_train
    spe = EpochIterator({"x": np.zeros((n, 1))}, cfg.train.batch_size, cfg.seed).steps_per_epoch
    part = _run(cfg, tmp_path, max_steps=2 * spe)
    folder = tmp_path / "trackers"
    first, later = (np.load(folder / f"token_loss_epoch_{e:04d}.npy") for e in (0, 1))
    graphdef, _ = setup_lib.build_model(cfg, dataset)
    rows = np.arange(0, n, 7)
    batch = {k: dataset.train[k][rows] for k in ("tokens", "token_mask")}
    logits = np.asarray(models.forward(graphdef, jax.device_get(part.state.params), batch), np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    targets = dataset.train["tokens"][rows, 1:]
    want = -np.take_along_axis(logp, targets[..., None].astype(np.int64), axis=-1)[..., 0]
    want = np.where(dataset.train["token_mask"][rows], want, np.nan)
    np.testing.assert_allclose(later[rows], want, rtol=1e-4, atol=1e-5)
    span_NxL = np.load(folder / "span_ids.npy")
    np.testing.assert_array_equal(span_NxL, _top_k_drop_np(first, later, 3))
    whole = _run(cfg, tmp_path)  # resumed: reads span_ids.npy back
    loss_ExNxSp = scoring.load_span_loss_matrix(str(tmp_path))
    assert np.isnan(loss_ExNxSp[:2]).all()  # epochs 0..W: no span yet
    has_NxSp = np.stack([(span_NxL == s).any(1) for s in (1, 2, 3)], axis=1)
    assert has_NxSp.all(1).mean() > 0.9
    np.testing.assert_array_equal(np.isfinite(loss_ExNxSp[2]), has_NxSp)
    fields = _span_fields(whole)
    np.testing.assert_array_equal(fields["seen_N"], has_NxSp.reshape(-1).astype(fields["seen_N"].dtype))
    arrays, _ = scoring.score_run(str(tmp_path))
    np.testing.assert_allclose(arrays["span_d_N"], np.nanmax(np.where(has_NxSp, loss_ExNxSp[2], np.nan), axis=1))


def test_top_k_drop_config_errors():
    with pytest.raises(ConfigError, match="tracker.spans='top_k_drop'.*language-model data"):
        tiny_config("mlp", tracker=dict(spans="top_k_drop"))
    with pytest.raises(ConfigError, match="tracker.span_warmup=2 leaves no epoch to track"):
        _top_k_config(span_warmup=2)
    with pytest.raises(ConfigError, match="tracker.span_k=0"):
        _top_k_config(span_k=0)
