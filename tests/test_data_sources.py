"""Tests for gdc.data.sources and gdc.data.canaries: array contract, seeded splits, canaries, errors."""

import dataclasses
import json
import string

import numpy as np
import pytest
import tensorflow_datasets as tfds

from gdc.data import canaries, sources
from gdc.data.config import SOURCES, DataConfig
from gdc.data.sources import build_dataset
from gdc.errors import ConfigError

SEQ_LEN = 64


@pytest.fixture(scope="module")
def pydoc_bytes() -> bytes:
    return sources.pydoc_text().encode("utf-8")


@pytest.fixture(scope="module")
def pydoc_ds() -> sources.Dataset:
    return build_dataset(DataConfig(source="pydoc", seq_len=SEQ_LEN))


@pytest.fixture(scope="module")
def canary_cfg() -> DataConfig:
    return DataConfig(source="pydoc_canaries", seq_len=SEQ_LEN, num_canaries=6, canary_repeats=5)


@pytest.fixture(scope="module")
def canary_ds(canary_cfg: DataConfig) -> sources.Dataset:
    return build_dataset(canary_cfg)


def assert_lm_contract(ds: sources.Dataset, seq_len: int) -> None:
    assert ds.kind == "lm"
    assert ds.meta["vocab_size"] == 256
    json.dumps(ds.meta)
    assert ds.meta["config"]["source"] == ds.meta["source"]
    for split, n in ((ds.train, ds.num_train), (ds.heldout, ds.num_heldout)):
        assert split["tokens"].dtype == np.int32 and split["tokens"].shape == (n, seq_len + 1)
        assert split["token_mask"].dtype == np.bool_ and split["token_mask"].shape == (n, seq_len)
        assert split["token_mask"].all()
        assert split["source_id"].dtype == np.int32 and split["source_id"].shape == (n,)
        assert np.all(np.diff(split["source_id"]) > 0)
        assert split["tokens"].min() >= 0 and split["tokens"].max() < 256
        assert all(len(v) == n for v in split.values())
    assert set(ds.train) == set(ds.heldout)
    assert ds.meta["num_train"] == ds.num_train > 0 and ds.meta["num_heldout"] == ds.num_heldout > 0
    train_ids, heldout_ids = ds.train["source_id"], ds.heldout["source_id"]
    assert not np.intersect1d(train_ids, heldout_ids).size


def assert_rows_are_chunks(tokens_NxL: np.ndarray, source_id_N: np.ndarray, data: bytes) -> None:
    row_len = tokens_NxL.shape[1]
    for row, sid in zip(tokens_NxL, source_id_N, strict=True):
        assert bytes(row.astype(np.uint8)) == data[sid * row_len : (sid + 1) * row_len]


def test_pydoc_contract_and_chunks(pydoc_ds: sources.Dataset, pydoc_bytes: bytes) -> None:
    assert_lm_contract(pydoc_ds, SEQ_LEN)
    num_chunks = len(pydoc_bytes) // (SEQ_LEN + 1)
    assert pydoc_ds.meta["num_chunks"] == num_chunks
    assert pydoc_ds.meta["corpus_bytes"] == len(pydoc_bytes)
    all_ids = np.concatenate([pydoc_ds.train["source_id"], pydoc_ds.heldout["source_id"]])
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(num_chunks))
    assert pydoc_ds.num_heldout == round(0.1 * num_chunks)
    assert_rows_are_chunks(pydoc_ds.train["tokens"], pydoc_ds.train["source_id"], pydoc_bytes)
    assert_rows_are_chunks(pydoc_ds.heldout["tokens"], pydoc_ds.heldout["source_id"], pydoc_bytes)
    # The decoded text of a row is the corresponding slice of the corpus text.
    text = sources.pydoc_text()
    first = bytes(pydoc_ds.train["tokens"][0].astype(np.uint8)).decode("utf-8", errors="ignore")
    assert first and first in text


def test_split_is_seeded(pydoc_ds: sources.Dataset) -> None:
    again = build_dataset(DataConfig(source="pydoc", seq_len=SEQ_LEN))
    for key in pydoc_ds.train:
        np.testing.assert_array_equal(again.train[key], pydoc_ds.train[key])
        np.testing.assert_array_equal(again.heldout[key], pydoc_ds.heldout[key])
    other = build_dataset(DataConfig(source="pydoc", seq_len=SEQ_LEN, split_seed=1))
    assert other.num_heldout == pydoc_ds.num_heldout
    assert not np.array_equal(other.heldout["source_id"], pydoc_ds.heldout["source_id"])


@pytest.mark.parametrize("num_rows, fraction", [(2, 0.1), (10, 0.25), (101, 0.5), (7, 0.9)])
def test_split_ids(num_rows: int, fraction: float) -> None:
    train, heldout = sources.split_ids(num_rows, fraction, split_seed=3)
    assert len(heldout) == min(num_rows, max(1, round(fraction * num_rows)))
    np.testing.assert_array_equal(np.sort(np.concatenate([train, heldout])), np.arange(num_rows))
    assert train.dtype == heldout.dtype == np.int32


def test_max_examples_truncates_train_only(pydoc_ds: sources.Dataset) -> None:
    small = build_dataset(DataConfig(source="pydoc", seq_len=SEQ_LEN, max_examples=100))
    assert small.num_train == 100
    np.testing.assert_array_equal(small.train["source_id"], pydoc_ds.train["source_id"][:100])
    np.testing.assert_array_equal(small.heldout["source_id"], pydoc_ds.heldout["source_id"])


def test_canary_contract(canary_ds: sources.Dataset) -> None:
    assert_lm_contract(canary_ds, SEQ_LEN)
    assert canary_ds.train["is_canary"].dtype == np.bool_
    assert not canary_ds.heldout["is_canary"].any()
    meta = canary_ds.meta["canaries"]
    assert len(meta["inserted"]) == 6 and len(meta["controls"]) == 10
    assert meta["format"] == "the secret code of {key} is {secret}." and meta["secret_digits"] == 6
    records = meta["inserted"] + meta["controls"]
    assert len({c["key"] for c in records}) == len(records)
    assert len({c["secret"] for c in records}) == len(records)
    for c in records:
        assert len(c["key"]) == 5 and set(c["key"]) <= set(string.ascii_lowercase)
        assert len(c["secret"]) == 6 and c["secret"].isdigit()
        assert c["text"] == meta["format"].format(key=c["key"], secret=c["secret"])
        assert c["prefix"] == f"the secret code of {c['key']} is "
        assert c["text"] == c["prefix"] + c["secret"] + "."


def test_canaries_inserted_where_recorded(canary_ds: sources.Dataset) -> None:
    tokens = canary_ds.train["tokens"]
    meta = canary_ds.meta["canaries"]
    expected_is_canary = np.zeros(canary_ds.num_train, dtype=bool)
    for c in meta["inserted"]:
        rows = canaries.find_canary_rows(tokens, c["text"])
        np.testing.assert_array_equal(rows, c["ids"])
        assert len(rows) == 5
        assert not canaries.find_canary_rows(canary_ds.heldout["tokens"], c["text"]).size
        length = len(c["text"])
        for row, offset in zip(c["ids"], c["offsets"], strict=True):
            assert 0 <= offset <= SEQ_LEN + 1 - length
            assert bytes(tokens[row, offset : offset + length].astype(np.uint8)).decode() == c["text"]
        expected_is_canary[c["ids"]] = True
    np.testing.assert_array_equal(canary_ds.train["is_canary"], expected_is_canary)
    assert expected_is_canary.sum() == 6 * 5  # no row holds two canaries
    for c in meta["controls"]:
        assert not canaries.find_canary_rows(tokens, c["text"]).size
        assert not canaries.find_canary_rows(canary_ds.heldout["tokens"], c["text"]).size
        assert not canaries.find_canary_rows(tokens, c["prefix"]).size


def test_canaries_leave_other_rows_alone(canary_ds: sources.Dataset, pydoc_ds: sources.Dataset) -> None:
    np.testing.assert_array_equal(canary_ds.train["source_id"], pydoc_ds.train["source_id"])
    np.testing.assert_array_equal(canary_ds.heldout["tokens"], pydoc_ds.heldout["tokens"])
    plain = ~canary_ds.train["is_canary"]
    np.testing.assert_array_equal(canary_ds.train["tokens"][plain], pydoc_ds.train["tokens"][plain])


def test_canaries_are_seeded(canary_cfg: DataConfig, canary_ds: sources.Dataset) -> None:
    again = build_dataset(canary_cfg)
    assert again.meta == canary_ds.meta
    np.testing.assert_array_equal(again.train["tokens"], canary_ds.train["tokens"])
    other = build_dataset(dataclasses.replace(canary_cfg, split_seed=1))
    assert other.meta["canaries"]["inserted"] != canary_ds.meta["canaries"]["inserted"]


def test_too_many_canary_copies() -> None:
    cfg = DataConfig(source="pydoc_canaries", num_canaries=5, canary_repeats=5, max_examples=20)
    with pytest.raises(ConfigError, match=r"data\.num_canaries"):
        build_dataset(cfg)


def _insert(tokens_NxL: np.ndarray, placement: str) -> tuple[np.ndarray, np.ndarray, dict]:
    kw = dict(num_canaries=4, canary_repeats=3, secret_digits=6, num_control_canaries=2, seed=7)
    return canaries.insert_canaries(tokens_NxL, placement=placement, **kw)


def test_canary_placements_draw_the_same_rows_and_canaries() -> None:
    """row_start writes every copy at byte 0, random_offset at its recorded offset; the rest of each row and every
    other row are the original bytes; both placements draw the same canaries into the same rows."""
    tokens_NxL = np.random.default_rng(0).integers(32, 127, (40, 60)).astype(np.int32)
    length = canaries.canary_length(6)
    out, meta, is_canary = {}, {}, {}
    for placement in canaries.PLACEMENTS:
        out[placement], is_canary[placement], meta[placement] = _insert(tokens_NxL, placement)
        assert meta[placement]["placement"] == placement
        json.dumps(meta[placement])
        expected_N = tokens_NxL.copy()
        for c in meta[placement]["inserted"]:
            assert len(c["ids"]) == len(c["offsets"]) == 3 and c["ids"] == sorted(c["ids"])
            for row, offset in zip(c["ids"], c["offsets"], strict=True):
                assert 0 <= offset <= 60 - length
                expected_N[row, offset : offset + length] = list(c["text"].encode())
        np.testing.assert_array_equal(out[placement], expected_N)  # canary bytes in place, nothing else changed
        np.testing.assert_array_equal(is_canary[placement], (expected_N != tokens_NxL).any(axis=1))
    row_start, random_offset = meta["row_start"]["inserted"], meta["random_offset"]["inserted"]
    assert all(o == 0 for c in row_start for o in c["offsets"])
    for c in row_start:
        for row in c["ids"]:
            assert bytes(out["row_start"][row, :length].astype(np.uint8)).decode() == c["text"]
    offsets = [o for c in random_offset for o in c["offsets"]]
    assert len(set(offsets)) > 3 and max(offsets) > 0  # really spread over the row
    for a, b in zip(row_start, random_offset, strict=True):
        assert {k: v for k, v in a.items() if k != "offsets"} == {k: v for k, v in b.items() if k != "offsets"}
    assert meta["row_start"]["controls"] == meta["random_offset"]["controls"]
    np.testing.assert_array_equal(is_canary["row_start"], is_canary["random_offset"])
    with pytest.raises(ValueError, match="placement='middle'"):
        _insert(tokens_NxL, "middle")


def test_canary_placement_in_the_dataset_and_its_validation(canary_cfg: DataConfig) -> None:
    assert DataConfig().canary_placement == "row_start"
    ds = build_dataset(dataclasses.replace(canary_cfg, canary_placement="random_offset"))
    meta = ds.meta["canaries"]
    assert meta["placement"] == "random_offset" and ds.meta["config"]["canary_placement"] == "random_offset"
    assert any(o > 0 for c in meta["inserted"] for o in c["offsets"])
    for c in meta["inserted"]:
        for row, offset in zip(c["ids"], c["offsets"], strict=True):
            written = ds.train["tokens"][row, offset : offset + len(c["text"])]
            assert bytes(written.astype(np.uint8)) == c["text"].encode()
    bad = dataclasses.replace(canary_cfg, canary_placement="middle")
    with pytest.raises(ConfigError, match=r"data\.canary_placement"):
        bad.validate()
    with pytest.raises(ConfigError, match=r"data\.canary_placement"):
        build_dataset(bad)


def test_find_canary_rows() -> None:
    rows = [b"xxabcxx", b"abcxxxx", b"xxxxxab", b"xxxxabc"]
    tokens_NxL = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(4, 7).astype(np.int32)
    np.testing.assert_array_equal(canaries.find_canary_rows(tokens_NxL, "abc"), [0, 1, 3])
    np.testing.assert_array_equal(canaries.find_canary_rows(tokens_NxL, b"xab"), [0, 2, 3])
    assert not canaries.find_canary_rows(tokens_NxL, "cxxxxx").size  # would need to run into the next row
    assert not canaries.find_canary_rows(tokens_NxL, "abcdefghij").size


def test_tfds_under_mock_data() -> None:
    cfg = DataConfig(source="tfds", seq_len=8, heldout_fraction=0.2)
    with tfds.testing.mock_data(num_examples=40):
        records = tfds.data_source("tiny_shakespeare", split="train")
        data = "\n".join(str(r["text"]) for r in records).encode("utf-8")
        ds = build_dataset(cfg)
        with pytest.raises(ConfigError, match=r"data\.tfds_text_key"):
            build_dataset(dataclasses.replace(cfg, tfds_text_key="nope"))
        with pytest.raises(ConfigError, match=r"data\.tfds_name"):
            build_dataset(dataclasses.replace(cfg, tfds_name="no_such_dataset_xyz"))
    assert_lm_contract(ds, 8)
    assert ds.meta["num_chunks"] == len(data) // 9 and ds.num_train + ds.num_heldout == len(data) // 9
    assert_rows_are_chunks(ds.train["tokens"], ds.train["source_id"], data)
    assert_rows_are_chunks(ds.heldout["tokens"], ds.heldout["source_id"], data)


def test_text_files_single_file(tmp_path) -> None:
    text = "".join(f"line {i}: héllo wörld\n" for i in range(50))
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    ds = build_dataset(DataConfig(source="text_files", path=str(path), seq_len=16))
    assert_lm_contract(ds, 16)
    data = text.encode("utf-8")
    assert ds.meta["files"] == [str(path)]
    assert ds.num_train + ds.num_heldout == len(data) // 17
    assert_rows_are_chunks(ds.train["tokens"], ds.train["source_id"], data)


def test_text_files_folder(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.txt").write_text("alpha " * 40, encoding="utf-8")
    (tmp_path / "b.txt").write_text("bravo " * 40, encoding="utf-8")
    (tmp_path / "c.md").write_text("ignored " * 40, encoding="utf-8")
    (tmp_path / "d.txt").write_bytes(b"bad \xff byte " * 10)
    ds = build_dataset(DataConfig(source="text_files", path=str(tmp_path), seq_len=10))
    assert_lm_contract(ds, 10)
    order = [tmp_path / "b.txt", tmp_path / "d.txt", tmp_path / "sub" / "a.txt"]
    assert ds.meta["files"] == [str(p) for p in order]
    data = "\n".join(["bravo " * 40, "bad \ufffd byte " * 10, "alpha " * 40]).encode("utf-8")
    assert ds.meta["corpus_bytes"] == len(data)
    assert_rows_are_chunks(ds.train["tokens"], ds.train["source_id"], data)
    assert_rows_are_chunks(ds.heldout["tokens"], ds.heldout["source_id"], data)


def test_empty_text_file_names_seq_len(tmp_path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("")
    with pytest.raises(ConfigError, match=r"data\.seq_len.*data\.path.*0 bytes"):
        build_dataset(DataConfig(source="text_files", path=str(path)))
    path.write_text("x" * 100)  # one chunk only: it goes to held-out, leaving no training example
    with pytest.raises(ConfigError, match=r"data\.seq_len=64.*100 bytes"):
        build_dataset(DataConfig(source="text_files", path=str(path)))


def test_folder_without_txt_files(tmp_path) -> None:
    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(ConfigError, match=r"data\.path"):
        build_dataset(DataConfig(source="text_files", path=str(tmp_path)))


@pytest.mark.parametrize(
    "field, overrides",
    [
        ("source", {"source": "foo"}),
        ("seq_len", {"seq_len": 1}),
        ("seq_len", {"seq_len": 8.5}),
        ("heldout_fraction", {"heldout_fraction": 0.0}),
        ("heldout_fraction", {"heldout_fraction": 1.0}),
        ("split_seed", {"split_seed": -1}),
        ("max_examples", {"max_examples": -5}),
        ("path", {"source": "text_files", "path": ""}),
        ("path", {"source": "text_files", "path": "/no/such/file.txt"}),
        ("tfds_name", {"source": "tfds", "tfds_name": ""}),
        ("tfds_text_key", {"source": "tfds", "tfds_text_key": ""}),
        ("num_canaries", {"source": "pydoc_canaries", "num_canaries": 0}),
        ("num_canaries", {"source": "pydoc_canaries", "secret_digits": 1, "num_control_canaries": 5}),
        ("canary_repeats", {"source": "pydoc_canaries", "canary_repeats": 0}),
        ("num_control_canaries", {"source": "pydoc_canaries", "num_control_canaries": -1}),
        ("secret_digits", {"source": "pydoc_canaries", "secret_digits": 0}),
        ("secret_digits", {"source": "pydoc_canaries", "secret_digits": 10}),
        ("seq_len", {"source": "pydoc_canaries", "seq_len": 34}),
        ("num_examples", {"source": "synthetic", "num_examples": 1}),
        ("num_features", {"source": "synthetic", "num_features": 0}),
        ("num_classes", {"source": "synthetic", "num_classes": 1}),
        ("label_noise", {"source": "synthetic", "label_noise": 1.5}),
    ],
)
def test_validate_names_field(field: str, overrides: dict) -> None:
    cfg = DataConfig(**overrides)
    with pytest.raises(ConfigError, match=rf"data\.{field}=") as info:
        cfg.validate()
    assert isinstance(info.value, ValueError)
    with pytest.raises(ConfigError, match=rf"data\.{field}="):
        build_dataset(cfg)


def test_defaults_validate() -> None:
    for source in SOURCES:
        if source != "text_files":
            DataConfig(source=source).validate()
    DataConfig(source="pydoc_canaries", seq_len=35).validate()  # the canary just fits


def test_synthetic_contract_and_split() -> None:
    cfg = DataConfig(source="synthetic", num_examples=300, num_features=5, num_classes=3, heldout_fraction=0.2)
    ds = build_dataset(cfg)
    assert ds.kind == "classification"
    json.dumps(ds.meta)
    assert ds.meta["num_classes"] == 3 and ds.meta["num_features"] == 5
    assert ds.num_train == 240 and ds.num_heldout == 60
    for split, n in ((ds.train, ds.num_train), (ds.heldout, ds.num_heldout)):
        assert split["x"].dtype == np.float32 and split["x"].shape == (n, 5)
        assert split["y"].dtype == np.int32 and split["y"].shape == (n,)
        assert split["source_id"].dtype == np.int32 and np.all(np.diff(split["source_id"]) > 0)
        assert split["is_noisy"].dtype == np.bool_ and not split["is_noisy"].any()
        assert set(np.unique(split["y"])) <= {0, 1, 2}
    all_ids = np.concatenate([ds.train["source_id"], ds.heldout["source_id"]])
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(300))
    assert ds.meta["noisy_ids"] == []
    # Blobs are well separated: the nearest class mean (estimated on train) classifies held-out well.
    means_KxD = np.stack([ds.train["x"][ds.train["y"] == k].mean(0) for k in range(3)])
    dist_NxK = ((ds.heldout["x"][:, None, :] - means_KxD[None]) ** 2).sum(-1)
    assert (dist_NxK.argmin(1) == ds.heldout["y"]).mean() > 0.9
    # The split changes with the seed; the examples themselves do not.
    other = build_dataset(dataclasses.replace(cfg, split_seed=1))
    assert not np.array_equal(other.train["source_id"], ds.train["source_id"])
    common, i, j = np.intersect1d(ds.train["source_id"], other.train["source_id"], return_indices=True)
    assert common.size
    np.testing.assert_array_equal(ds.train["x"][i], other.train["x"][j])


def test_synthetic_label_noise() -> None:
    clean = build_dataset(DataConfig(source="synthetic", num_examples=400))
    noisy = build_dataset(DataConfig(source="synthetic", num_examples=400, label_noise=0.25))
    noisy_ids = np.asarray(noisy.meta["noisy_ids"])
    assert len(noisy_ids) == round(0.25 * noisy.num_train)
    assert len(np.unique(noisy_ids)) == len(noisy_ids)
    np.testing.assert_array_equal(np.flatnonzero(noisy.train["is_noisy"]), noisy_ids)
    changed = noisy.train["y"] != clean.train["y"]
    np.testing.assert_array_equal(changed, noisy.train["is_noisy"])
    np.testing.assert_array_equal(noisy.train["x"], clean.train["x"])
    np.testing.assert_array_equal(noisy.heldout["y"], clean.heldout["y"])
    assert not noisy.heldout["is_noisy"].any()
    again = build_dataset(DataConfig(source="synthetic", num_examples=400, label_noise=0.25))
    assert again.meta["noisy_ids"] == noisy.meta["noisy_ids"]


def test_synthetic_no_train_left() -> None:
    with pytest.raises(ConfigError, match=r"data\.num_examples"):
        build_dataset(DataConfig(source="synthetic", num_examples=2, heldout_fraction=0.9))
