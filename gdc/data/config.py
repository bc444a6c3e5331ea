"""``DataConfig``: which data ``gdc.data.sources.build_dataset`` builds and how it splits it, and its validation.

``validate`` raises ConfigError naming the first bad field as ``data.<field>``, what is allowed and how to set it
(``fail``); the builders in ``gdc.data.sources`` raise through the same ``fail``.
"""

import dataclasses
import numbers
import pathlib
from typing import NoReturn

from gdc.data import canaries
from gdc.errors import ConfigError

SOURCES = ("pydoc", "pydoc_canaries", "tfds", "text_files", "synthetic", "tabular")
LM_SOURCES = ("pydoc", "pydoc_canaries", "tfds", "text_files")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data to build and how to split it; see `validate` for the allowed values."""

    source: str = "pydoc"
    seq_len: int = 64  # characters per example (inputs); each row stores seq_len + 1 tokens
    heldout_fraction: float = 0.1
    split_seed: int = 0  # fixes the train/held-out split, canary placement and label noise
    max_examples: int = 0  # 0 = all; else truncate the TRAIN split to this many (after the split)
    path: str = ""  # text_files: a .txt file or a folder of .txt files; tabular: an encoded table .npz
    tfds_name: str = "tiny_shakespeare"
    tfds_split: str = "train"
    tfds_text_key: str = "text"
    tfds_data_dir: str = ""  # "" = TFDS default
    num_canaries: int = 10
    canary_repeats: int = 8
    secret_digits: int = 6
    num_control_canaries: int = 10  # never inserted: exposure/extraction controls
    # Where a canary copy sits in its row: "row_start" (offset 0, where greedy decoding starts) or "random_offset"
    # (after up to seq_len + 1 - canary length bytes of other text; evaluators decode from each copy's own context).
    canary_placement: str = "row_start"
    num_examples: int = 512  # synthetic only: total examples before the split
    num_features: int = 16  # synthetic only
    num_classes: int = 4  # synthetic only
    label_noise: float = 0.0  # synthetic only: fraction of train labels flipped to another class
    # Contiguous id ranges of the training split; each global batch takes B / shards rows from each range, and with
    # several processes each process keeps only the rows of its shards/processes ranges (gdc/data/pipeline.py).
    shards: int = 1
    # Training batches built and placed ahead on a background thread; 0 = in the loop; -1 = auto: 2 on GPU/TPU, 0 on
    # CPU (there the thread competes with XLA for the same cores and measured slower, benchmarks/README.md).
    prefetch: int = -1
    # The training arrays uploaded once, each step gathering its rows on the device (nothing crosses per step): 1 on,
    # 0 off, -1 = auto: on up to 512 MiB when each process holds every row (gdc.train.setup.resolve_on_device).
    on_device: int = -1

    def validate(self) -> None:
        """Raises ConfigError naming the first bad field (`data.<field>`), what is allowed and how to fix."""
        if self.source not in SOURCES:
            fail("source", self.source, f"is not one of {SOURCES}")
        _check_int(self, "seq_len", 2)
        _check_float(self, "heldout_fraction")
        if not 0.0 < self.heldout_fraction < 1.0:
            fail("heldout_fraction", self.heldout_fraction, "must lie strictly between 0 and 1, e.g. 0.1")
        _check_int(self, "split_seed", 0)
        _check_int(self, "max_examples", 0, " (0 keeps every training example)")
        _check_int(self, "shards", 1, " (1: one global shuffle; a multiple of the process count for per-process data)")
        _check_int(self, "prefetch", -1, " (batches read ahead; 0 turns prefetching off, -1 = auto)")
        if self.on_device not in (-1, 0, 1) or not isinstance(self.on_device, numbers.Integral):
            fail("on_device", self.on_device, "must be 1 (on), 0 (off) or -1 (auto)")
        for name in ("path", "tfds_name", "tfds_split", "tfds_text_key", "tfds_data_dir"):
            if not isinstance(getattr(self, name), str):
                fail(name, getattr(self, name), "must be a string")

        if self.source == "text_files":
            if not self.path:
                fail("path", self.path, "must name a .txt file or a folder of .txt files for text_files")
            if not pathlib.Path(self.path).exists():
                fail("path", self.path, "does not exist; point it at a .txt file or a folder of .txt files")
        if self.source == "tfds":
            for name in ("tfds_name", "tfds_split", "tfds_text_key"):
                if not getattr(self, name):
                    fail(name, getattr(self, name), "must be non-empty for source='tfds'")
        if self.source == "pydoc_canaries":
            _check_int(self, "num_canaries", 1)
            _check_int(self, "canary_repeats", 1)
            _check_int(self, "num_control_canaries", 0)
            _check_int(self, "secret_digits", 1)
            if self.canary_placement not in canaries.PLACEMENTS:
                fail("canary_placement", self.canary_placement, f"is not one of {canaries.PLACEMENTS}")
            if self.secret_digits > 9:
                fail("secret_digits", self.secret_digits, "must be in 1..9")
            total = self.num_canaries + self.num_control_canaries
            if total > 10**self.secret_digits:
                fail(
                    "num_canaries",
                    self.num_canaries,
                    f"plus data.num_control_canaries={self.num_control_canaries} exceeds the "
                    f"{10**self.secret_digits} distinct secrets of "
                    f"data.secret_digits={self.secret_digits} digits; use fewer canaries or more digits",
                )
            length = canaries.canary_length(self.secret_digits)
            if self.seq_len < length:
                fail(
                    "seq_len",
                    self.seq_len,
                    f"must be >= {length}, the length of one canary with data.secret_digits={self.secret_digits}",
                )
        if self.source == "synthetic":
            _check_int(self, "num_examples", 2)
            _check_int(self, "num_features", 1)
            _check_int(self, "num_classes", 2)
            _check_float(self, "label_noise")
            if not 0.0 <= self.label_noise <= 1.0:
                fail("label_noise", self.label_noise, "must lie in [0, 1] (0 = clean labels)")


def fail(field: str, value: object, allowed: str) -> NoReturn:
    raise ConfigError(f"data.{field}={value!r} {allowed} (set it with --config.data.{field}=...)")


def _check_int(cfg: DataConfig, field: str, minimum: int, note: str = "") -> None:
    value = getattr(cfg, field)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        fail(field, value, f"must be an integer >= {minimum}{note}")
    if value < minimum:
        fail(field, value, f"must be >= {minimum}{note}")


def _check_float(cfg: DataConfig, field: str) -> None:
    value = getattr(cfg, field)
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        fail(field, value, "must be a number")
