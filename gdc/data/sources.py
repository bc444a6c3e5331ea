"""Data sources: a corpus or a synthetic task turned into in-memory numpy arrays with stable int32 ids.

Invariants:
* Every array of a split has the same leading dimension; example id i is row i of the train arrays (0..N-1).
* The train/held-out split is a seeded permutation (`np.random.default_rng(split_seed)`) of the source rows;
  held-out gets max(1, round(heldout_fraction * n)) of them. Within a split, rows are in ascending `source_id`
  order, so ids do not depend on anything but the config. Train and held-out `source_id`s are disjoint.
* Language-model sources are byte-level (utf-8 bytes, vocab 256). The text is cut into non-overlapping chunks
  of seq_len + 1 bytes (remainder dropped); `token_mask` marks which targets `tokens[:, 1:]` count.
* Canaries (pydoc_canaries) and label noise (synthetic) touch the TRAIN split only, after `max_examples`
  truncation, and are recorded in `meta` and in per-row bool arrays.

``DataConfig``, its validation and the source names are in ``gdc.data.config``.
"""

import dataclasses
import pathlib

import numpy as np

from gdc.data import canaries
from gdc.data.config import DataConfig, fail
from gdc.errors import ConfigError

VOCAB_SIZE = 256
# Synthetic blobs are drawn from this fixed seed so that split_seed changes the split and the label noise, not
# the task itself.
SYNTHETIC_DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Train and held-out arrays plus JSON-serialisable metadata.

    Attributes:
        train: arrays with leading dimension N (example id i = row i).
        heldout: arrays with leading dimension N_heldout.
        meta: source, kind, num_train, num_heldout, vocab_size or num_classes, canaries, noisy_ids, ...
    """

    train: dict[str, np.ndarray]
    heldout: dict[str, np.ndarray]
    meta: dict

    @property
    def num_train(self) -> int:
        return len(self.train["source_id"])

    @property
    def num_heldout(self) -> int:
        return len(self.heldout["source_id"])

    @property
    def kind(self) -> str:
        """One of "lm", "classification" or "tabular"."""
        return self.meta["kind"]


def span_ids(dataset: Dataset, spans: str) -> np.ndarray | None:
    """The ``tracker.spans`` span ids of the training rows, ``[N, seq_len]`` int8 (0: no span, s: the token's target
    belongs to span s), or None for ``"none"``. ``"canary_secrets"``: the secret digits of every inserted canary copy
    (``canaries.secret_spans``)."""
    if spans in ("none", "top_k_drop"):  # top_k_drop: chosen during training (gdc.train.span_select)
        return None
    if spans == "canary_secrets":
        meta = dataset.meta.get("canaries")
        if meta is None:
            raise ConfigError("tracker.spans='canary_secrets' needs data.source='pydoc_canaries'.")
        return canaries.secret_spans(meta, dataset.num_train, dataset.train["token_mask"].shape[1])
    raise ConfigError(f"tracker.spans={spans!r} is not a span kind.")


def build_dataset(cfg: DataConfig) -> Dataset:
    """Validates `cfg` and builds its dataset (see the module docstring for the array contract).

    LM sources give `tokens` int32 [N, seq_len + 1], `token_mask` bool [N, seq_len], `source_id` int32 [N]
    and, for pydoc_canaries, `is_canary` bool [N]. The synthetic source gives `x` float32 [N, D],
    `y` int32 [N], `source_id` int32 [N] and `is_noisy` bool [N]. Held-out has the same keys, with the
    canary and noise flags all False.

    Raises:
        ConfigError: on a bad field, or when the corpus is too short for one training example.
    """
    cfg.validate()
    if cfg.source == "synthetic":
        ds = _build_synthetic(cfg)
    elif cfg.source == "tabular":
        ds = _build_tabular(cfg)
    else:
        ds = _build_lm(cfg, *_load_corpus(cfg))
    return Dataset(ds.train, ds.heldout, {**ds.meta, "config": dataclasses.asdict(cfg)})


def _load_corpus(cfg: DataConfig) -> tuple[bytes, dict]:
    if cfg.source in ("pydoc", "pydoc_canaries"):
        data, source_meta = pydoc_text().encode("utf-8"), {}
    elif cfg.source == "tfds":
        data = tfds_text(cfg).encode("utf-8")
        source_meta = {"tfds_name": cfg.tfds_name, "tfds_split": cfg.tfds_split}
    else:
        text, files = text_files_text(cfg.path)
        data, source_meta = text.encode("utf-8"), {"files": files}
    return data, source_meta


def pydoc_text() -> str:
    """The `pydoc_data.topics` help texts (shipped with CPython, ~465 KB) in sorted key order."""
    from pydoc_data import topics  # Imported here: only the pydoc sources need it.

    return "\n\n".join(topics.topics[key] for key in sorted(topics.topics))


def text_files_text(path: str) -> tuple[str, list[str]]:
    """Reads a .txt file, or every .txt file under a folder (recursive, sorted), joined with "\\n".

    Files are decoded as utf-8 with errors="replace".

    Returns:
        (text, the paths read).
    """
    root = pathlib.Path(path)
    # Sorted by path components, which does not depend on the Python version's Path ordering.
    files = sorted(root.rglob("*.txt"), key=lambda f: f.relative_to(root).parts) if root.is_dir() else [root]
    files = [f for f in files if f.is_file()]
    if not files:
        fail("path", path, "is a folder without any .txt file; point it at a .txt file or a folder of them")
    texts = [f.read_bytes().decode("utf-8", errors="replace") for f in files]
    return "\n".join(texts), [str(f) for f in files]


def tfds_text(cfg: DataConfig) -> str:
    """Concatenates the `tfds_text_key` field of every record of a TFDS split with "\\n".

    Reads through `tfds.data_source` (array_record; needs no TensorFlow). It keeps the TFDS default
    `download=True`: a dataset missing from `tfds_data_dir` is downloaded and prepared on first use. Datasets
    without array_record files fall back to `tfds.load` + `tfds.as_numpy`, which needs TensorFlow.
    """
    import tensorflow_datasets as tfds  # Imported here: slow, and only this source needs it.

    data_dir = cfg.tfds_data_dir or None
    try:
        records = tfds.data_source(cfg.tfds_name, split=cfg.tfds_split, data_dir=data_dir)
    except Exception as data_source_error:  # Broad: retried below, then re-raised with the fields named.
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            hint = ", or install tensorflow for the tfds.load fallback"
            raise _tfds_error(cfg, data_source_error, hint) from data_source_error
        try:
            records = tfds.as_numpy(tfds.load(cfg.tfds_name, split=cfg.tfds_split, data_dir=data_dir))
        except Exception as load_error:
            raise _tfds_error(cfg, load_error, "; tfds.load failed as well") from load_error
    texts = []
    for record in records:
        if cfg.tfds_text_key not in record:
            fail("tfds_text_key", cfg.tfds_text_key, f"is not a field of {cfg.tfds_name}: {sorted(record)}")
        value = record[cfg.tfds_text_key]
        if isinstance(value, np.ndarray):
            value = value.item()
        texts.append(value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value))
    return "\n".join(texts)


def _tfds_error(cfg: DataConfig, error: Exception, hint: str) -> ConfigError:
    # First line only: TFDS's "not found" message goes on to list every dataset it knows.
    reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
    return ConfigError(
        f"data.tfds_name={cfg.tfds_name!r} (data.tfds_split={cfg.tfds_split!r}) could not be read "
        f"({reason}); "
        f"check the name, the split and data.tfds_data_dir={cfg.tfds_data_dir!r}{hint}"
    )


def chunk_bytes(data: bytes, seq_len: int) -> np.ndarray:
    """Cuts `data` into non-overlapping rows of seq_len + 1 bytes, dropping the remainder.

    Returns:
        int32 [num_rows, seq_len + 1] byte tokens.
    """
    row_len = seq_len + 1
    num_rows = len(data) // row_len
    flat = np.frombuffer(data, dtype=np.uint8, count=num_rows * row_len)
    return flat.reshape(num_rows, row_len).astype(np.int32)


def split_ids(num_rows: int, heldout_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/held-out split of row ids 0..num_rows-1.

    Returns:
        (train source ids, held-out source ids), each ascending int32; held-out has
        max(1, round(heldout_fraction * num_rows)) ids, capped at num_rows.
    """
    num_heldout = min(num_rows, max(1, round(heldout_fraction * num_rows)))
    perm = np.random.default_rng(split_seed).permutation(num_rows)
    return np.sort(perm[num_heldout:]).astype(np.int32), np.sort(perm[:num_heldout]).astype(np.int32)


def _build_lm(cfg: DataConfig, data: bytes, source_meta: dict) -> Dataset:
    tokens_all = chunk_bytes(data, cfg.seq_len)
    train_ids, heldout_ids = split_ids(len(tokens_all), cfg.heldout_fraction, cfg.split_seed)
    if cfg.max_examples:
        train_ids = train_ids[: cfg.max_examples]
    if len(train_ids) == 0:
        where = f"data.path={cfg.path!r}" if cfg.source == "text_files" else f"source {cfg.source!r}"
        raise ConfigError(
            f"data.seq_len={cfg.seq_len}: the corpus of {where} has {len(data)} bytes, which gives "
            f"{len(tokens_all)} chunk(s) of seq_len + 1 = {cfg.seq_len + 1} bytes and no training example "
            f"once held-out takes its share; lower data.seq_len or use a longer corpus"
        )

    def split(ids: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "tokens": tokens_all[ids],
            "token_mask": np.ones((len(ids), cfg.seq_len), dtype=bool),
            "source_id": ids,
        }

    train, heldout = split(train_ids), split(heldout_ids)
    meta = {
        "source": cfg.source,
        "kind": "lm",
        "vocab_size": VOCAB_SIZE,
        "seq_len": cfg.seq_len,
        "corpus_bytes": len(data),
        "num_chunks": len(tokens_all),
        "split_seed": cfg.split_seed,
        **source_meta,
    }
    if cfg.source == "pydoc_canaries":
        num_copies = cfg.num_canaries * cfg.canary_repeats
        if num_copies > len(train_ids):
            fail(
                "num_canaries",
                cfg.num_canaries,
                f"times data.canary_repeats={cfg.canary_repeats} needs {num_copies} training rows, "
                f"but there are {len(train_ids)}; insert fewer copies or raise data.max_examples",
            )
        train["tokens"], train["is_canary"], meta["canaries"] = canaries.insert_canaries(
            train["tokens"],
            num_canaries=cfg.num_canaries,
            canary_repeats=cfg.canary_repeats,
            secret_digits=cfg.secret_digits,
            num_control_canaries=cfg.num_control_canaries,
            seed=cfg.split_seed,
            placement=cfg.canary_placement,
        )
        heldout["is_canary"] = np.zeros(len(heldout_ids), dtype=bool)
    return Dataset(train, heldout, {**meta, "num_train": len(train_ids), "num_heldout": len(heldout_ids)})


def _build_synthetic(cfg: DataConfig) -> Dataset:
    data_rng = np.random.default_rng(SYNTHETIC_DATA_SEED)
    means_KxD = data_rng.normal(0.0, 3.0, size=(cfg.num_classes, cfg.num_features))
    y_all = data_rng.integers(0, cfg.num_classes, size=cfg.num_examples).astype(np.int32)
    x_all = (means_KxD[y_all] + data_rng.normal(size=(cfg.num_examples, cfg.num_features))).astype(np.float32)
    train_ids, heldout_ids = split_ids(cfg.num_examples, cfg.heldout_fraction, cfg.split_seed)
    if cfg.max_examples:
        train_ids = train_ids[: cfg.max_examples]
    if len(train_ids) == 0:
        fail(
            "num_examples",
            cfg.num_examples,
            f"leaves no training example once data.heldout_fraction={cfg.heldout_fraction} is held out; "
            "raise data.num_examples or lower data.heldout_fraction",
        )

    y_N = y_all[train_ids].copy()
    noise_rng = np.random.default_rng([cfg.split_seed, 2])
    num_noisy = round(cfg.label_noise * len(train_ids))
    noisy_ids = np.sort(noise_rng.choice(len(train_ids), size=num_noisy, replace=False))
    # A shift in 1..K-1 always lands on a different class, uniformly over the other K - 1.
    shift = noise_rng.integers(1, cfg.num_classes, size=num_noisy)
    y_N[noisy_ids] = (y_N[noisy_ids] + shift) % cfg.num_classes
    is_noisy_N = np.zeros(len(train_ids), dtype=bool)
    is_noisy_N[noisy_ids] = True

    train = {"x": x_all[train_ids], "y": y_N, "source_id": train_ids, "is_noisy": is_noisy_N}
    heldout = {
        "x": x_all[heldout_ids],
        "y": y_all[heldout_ids],
        "source_id": heldout_ids,
        "is_noisy": np.zeros(len(heldout_ids), dtype=bool),
    }
    meta = {
        "source": cfg.source,
        "kind": "classification",
        "num_classes": cfg.num_classes,
        "num_features": cfg.num_features,
        "num_examples": cfg.num_examples,
        "split_seed": cfg.split_seed,
        "data_seed": SYNTHETIC_DATA_SEED,
        "label_noise": cfg.label_noise,
        "noisy_ids": noisy_ids.tolist(),
        "num_train": len(train_ids),
        "num_heldout": len(heldout_ids),
    }
    return Dataset(train, heldout, meta)


def _build_tabular(cfg: DataConfig) -> Dataset:
    """An encoded table written by ``gdc.studies.tabular.data.save``: ``x``/``y`` (train), ``x_heldout``/``y_heldout``.

    The table fixes its own split (``heldout_fraction`` and ``split_seed`` are not used); ``max_examples`` still
    truncates the train rows. The path is checked here (``build_dataset`` runs before anything compiles).
    """
    if not (cfg.path.endswith(".npz") and pathlib.Path(cfg.path).is_file()):
        fail("path", cfg.path, "must name an existing .npz table for source='tabular' (gdc.studies.tabular.data.save)")
    with np.load(cfg.path) as z:
        missing = [k for k in ("x", "y", "x_heldout", "y_heldout") if k not in z.files]
        if missing:
            fail("path", cfg.path, f"lacks the arrays {missing}; write it with gdc.studies.tabular.data.save")
        x, y, xh, yh = (z[k] for k in ("x", "y", "x_heldout", "y_heldout"))
        # The column layout (numeric columns, then one-hot blocks) when the table has one; tabddpm needs it.
        layout = {"num_numeric": int(z["num_numeric"]), "cards": [int(c) for c in z["cards"]]} if "cards" in z else {}
    if cfg.max_examples:
        x, y = x[: cfg.max_examples], y[: cfg.max_examples]
    if len(x) == 0 or x.ndim != 2:
        fail("path", cfg.path, f"holds x of shape {x.shape}; need a non-empty [N, D] array")
    train = {"x": x.astype(np.float32), "y": y.astype(np.int32), "source_id": np.arange(len(x), dtype=np.int32)}
    heldout = {"x": xh.astype(np.float32), "y": yh.astype(np.int32), "source_id": np.arange(len(xh), dtype=np.int32)}
    meta = {
        "source": cfg.source,
        "kind": "tabular",
        "num_features": int(x.shape[1]),
        "num_classes": int(max(y.max(initial=0), yh.max(initial=0)) + 1),
        "num_train": len(x),
        "num_heldout": len(xh),
        **layout,
    }
    return Dataset(train, heldout, meta)
