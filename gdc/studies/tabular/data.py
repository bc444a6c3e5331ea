"""Mixed-type tables: numeric columns, categorical columns and a class label; their one-hot encoding for the DDPM.

Sources (no download): two real mixed-type tables shipped inside pinned PyPI wheels (``PACKAGED_TABLES``:
palmerpenguins 0.1.6 ``data/penguins.csv`` and vega_datasets 0.9.0 ``_data/cars.json``, read from the installed
files by the CSV loader with declared column roles), scikit-learn's bundled breast_cancer, wine and diabetes tables
with some numeric columns binned into quantile categories (diabetes' target is split at its median into a 0/1
label), a synthetic mixed-type generator with correlated feature groups, planted exact duplicates and outliers, and
the same CSV loader for the TabCutMix paper's tables (Adult, Default, Shoppers, Magic) when the user has the files,
with the reference code's column roles.

Invariants:
  * ``Table.num_NxF`` holds numeric columns in their own units; ``cat_NxFc`` int codes 0..card-1; ``y_N`` the label.
  * The encoding is ``[standardised numerics | one-hot categoricals | one-hot label]``; ``decode`` maps any real
    vector back to a table (argmax per one-hot block), so generated rows become tables the metrics can read.
  * Standardisation statistics come from the training rows only.
"""

import csv
import dataclasses
import json
import os
from importlib import metadata

import numpy as np

from gdc.errors import ConfigError

SKLEARN_TABLES = ("breast_cancer", "wine", "diabetes")
CSV_TABLES = {  # the reference code's column roles (0-based column indices of the CSV, header row first)
    "adult": {"numerical": [0, 2, 4, 10, 11, 12], "categorical": [1, 3, 5, 6, 7, 8, 9, 13], "target": 14},
    "default": {"numerical": [0, 4, *range(11, 23)], "categorical": [1, 2, 3, 5, 6, 7, 8, 9, 10], "target": 23},
    "shoppers": {"numerical": list(range(10)), "categorical": list(range(10, 17)), "target": 17},
    "magic": {"numerical": list(range(10)), "categorical": [], "target": 10},
}


# Real mixed-type tables shipped inside pinned PyPI wheels: read from the installed files, never downloaded. Roles
# by header name; rows with a missing cell in a used column are dropped.
PACKAGED_TABLES = {
    # Palmer penguins (Gorman, Williams & Fraser 2014; Palmer Station LTER; data CC0). 344 rows, 333 complete.
    "penguins": {
        "package": "palmerpenguins",
        "version": "0.1.6",
        "license": "MIT (package), CC0 (data)",
        "file": "palmerpenguins/data/penguins.csv",
        "numerical": ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"],
        "categorical": ["island", "sex", "year"],
        "target": "species",
        "missing": ("NA", ""),
    },
    # Auto MPG cars (Donoho & Ramos 1982, StatLib), as bundled by vega_datasets (MIT). 406 rows, 392 complete.
    "cars": {
        "package": "vega_datasets",
        "version": "0.9.0",
        "license": "MIT (package); data from the StatLib archive",
        "file": "vega_datasets/_data/cars.json",
        "numerical": ["Miles_per_Gallon", "Displacement", "Horsepower", "Weight_in_lbs", "Acceleration"],
        "categorical": ["Cylinders", "Year"],
        "target": "Origin",
        "missing": ("",),
    },
}


@dataclasses.dataclass(frozen=True)
class Table:
    num_NxF: np.ndarray  # float64 numeric columns
    cat_NxFc: np.ndarray  # int32 categorical codes
    y_N: np.ndarray  # int32 class label
    cards: tuple[int, ...]  # categories per categorical column
    num_classes: int
    flags: dict = dataclasses.field(default_factory=dict)  # optional bool [N] arrays (planted duplicates, ...)
    groups: tuple = ()  # planted correlated feature groups (feature indices, numeric first), if the table has them

    def __len__(self) -> int:
        return len(self.y_N)

    @property
    def num_columns(self) -> int:
        """Columns the distance counts: numeric + categorical + the label (as in the reference code)."""
        return self.num_NxF.shape[1] + self.cat_NxFc.shape[1] + 1

    def cat_with_label(self) -> np.ndarray:
        return np.concatenate([self.cat_NxFc, self.y_N[:, None]], axis=1).astype(np.int32)

    def take(self, rows: np.ndarray) -> "Table":
        rows = np.asarray(rows)
        flags = {k: v[rows] for k, v in self.flags.items()}
        return dataclasses.replace(
            self, num_NxF=self.num_NxF[rows], cat_NxFc=self.cat_NxFc[rows], y_N=self.y_N[rows], flags=flags
        )

    def append(self, other: "Table") -> "Table":
        flags = {k: np.concatenate([v, other.flags.get(k, np.zeros(len(other), bool))]) for k, v in self.flags.items()}
        return dataclasses.replace(
            self,
            num_NxF=np.concatenate([self.num_NxF, other.num_NxF]),
            cat_NxFc=np.concatenate([self.cat_NxFc, other.cat_NxFc]),
            y_N=np.concatenate([self.y_N, other.y_N]),
            flags=flags,
        )


def _quantile_bins(v_N: np.ndarray, bins: int) -> np.ndarray:
    edges = np.quantile(v_N, np.linspace(0, 1, bins + 1)[1:-1])
    codes = np.searchsorted(np.unique(edges), v_N, side="right")
    return np.unique(codes, return_inverse=True)[1].astype(np.int32)  # dense 0..k-1


def from_columns(x_NxF: np.ndarray, y_N: np.ndarray, cat_cols: dict[int, int]) -> Table:
    """Table from numeric columns; ``cat_cols`` {column: bins} bins those columns (quantiles) into categories.

    A column with at most ``bins`` distinct values keeps its values as the categories.
    """
    x_NxF = np.asarray(x_NxF, np.float64)
    cats = []
    for j, bins in sorted(cat_cols.items()):
        values = np.unique(x_NxF[:, j])
        cats.append(
            np.searchsorted(values, x_NxF[:, j]).astype(np.int32)
            if len(values) <= bins
            else _quantile_bins(x_NxF[:, j], bins)
        )
    keep = [j for j in range(x_NxF.shape[1]) if j not in cat_cols]
    cat_NxFc = np.stack(cats, axis=1) if cats else np.zeros((len(x_NxF), 0), np.int32)
    y_N = np.unique(y_N, return_inverse=True)[1].astype(np.int32)
    return Table(x_NxF[:, keep], cat_NxFc, y_N, tuple(int(c.max()) + 1 for c in cats), int(y_N.max()) + 1)


def sklearn_table(name: str) -> Table:
    """breast_cancer (30 -> 27 numeric + 3 binned), wine (13 -> 11 + 2), diabetes (10 -> 7 + sex + 2 binned)."""
    from sklearn import datasets

    if name == "breast_cancer":
        x, y = datasets.load_breast_cancer(return_X_y=True)
        return from_columns(x, y, {0: 4, 4: 3, 8: 3})
    if name == "wine":
        x, y = datasets.load_wine(return_X_y=True)
        return from_columns(x, y, {0: 3, 9: 4})
    if name == "diabetes":
        x, t = datasets.load_diabetes(return_X_y=True)
        return from_columns(x, (t > np.median(t)).astype(np.int32), {0: 4, 1: 2, 2: 3})
    raise ConfigError(f"tabular.dataset={name!r} is not one of {SKLEARN_TABLES}, 'synthetic' or a CSV table.")


def synthetic_table(
    num_rows: int,
    *,
    seed: int,
    num_numeric: int = 6,
    num_categorical: int = 3,
    num_classes: int = 2,
    levels: int = 4,
    groups: int = 3,
    duplicate_fraction: float = 0.05,
    duplicate_copies: int = 3,
    outlier_fraction: float = 0.03,
) -> Table:
    """Mixed-type rows with class structure, ``groups`` correlated feature groups, planted duplicates and outliers.

    Feature groups: numeric j and categorical j belong to group ``j % groups``; each group has its own latent factor.
    A group's latent is a class mean (sd 0.7) plus a standard normal; numeric j = its group's latent x a loading in
    [0.9, 1] + noise (sd 0.25), so numerics of one group correlate at about 0.9 and numerics of different groups
    weakly; categorical j (``levels`` levels) is a noisy quantisation of its group's latent. ``Table.groups`` lists
    the planted groups as feature indices (numeric first, then categorical), the clusters TabCutMixPlus should
    recover. Duplicates: ``duplicate_fraction`` of the base rows appear ``duplicate_copies`` times in all (flag
    ``duplicate``); outliers: ``outlier_fraction`` of the rows get each group's numerics shifted by 6 standard
    deviations (one random sign per group) and the group's extreme category on that side (flag ``outlier``).
    Exactly ``num_rows`` rows come back, in a seeded shuffled order.
    """
    rng = np.random.default_rng([seed, 77])
    n_dup = int(round(duplicate_fraction * num_rows))
    n_base = num_rows - n_dup * (duplicate_copies - 1)
    y_N = rng.integers(0, num_classes, n_base).astype(np.int32)
    means_KxG = rng.normal(0.0, 0.7, (num_classes, groups))
    latent_NxG = means_KxG[y_N] + rng.normal(size=(n_base, groups))
    group_num, group_cat = np.arange(num_numeric) % groups, np.arange(num_categorical) % groups
    loading_F = rng.uniform(0.9, 1.0, num_numeric)
    num_NxF = latent_NxG[:, group_num] * loading_F + 0.25 * rng.normal(size=(n_base, num_numeric))
    cards = (levels,) * num_categorical
    cat_NxFc = np.zeros((n_base, num_categorical), np.int32)
    for j, card in enumerate(cards):
        src = latent_NxG[:, group_cat[j]] + 0.15 * rng.normal(size=n_base)
        cat_NxFc[:, j] = np.clip(np.floor((src + 1.5) / 3.0 * card), 0, card - 1).astype(np.int32)
    outlier_N = np.zeros(n_base, bool)
    out = rng.choice(n_base, int(round(outlier_fraction * num_rows)), replace=False)
    outlier_N[out] = True
    sign_OxG = rng.choice([-1.0, 1.0], size=(len(out), groups))
    num_NxF[out] += 6.0 * sign_OxG[:, group_num]
    for j, card in enumerate(cards):  # the extreme level on the side of the shift: the groups stay intact
        cat_NxFc[out, j] = np.where(sign_OxG[:, group_cat[j]] > 0, card - 1, 0)
    dup_src = rng.choice(np.flatnonzero(~outlier_N), n_dup, replace=False)
    rows = np.concatenate([np.arange(n_base), np.repeat(dup_src, duplicate_copies - 1)])
    dup_N = np.isin(rows, dup_src)
    rows_order = rng.permutation(len(rows))
    rows, dup_N = rows[rows_order], dup_N[rows_order]
    planted = tuple(
        tuple([*np.flatnonzero(group_num == g).tolist(), *(num_numeric + np.flatnonzero(group_cat == g)).tolist()])
        for g in range(groups)
    )
    flags = {"duplicate": dup_N, "outlier": outlier_N[rows]}
    return Table(num_NxF[rows], cat_NxFc[rows], y_N[rows], cards, num_classes, flags, planted)


def read_rows(path: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows of strings) of a CSV file (header row first) or a JSON list of records (null -> "")."""
    if path.endswith(".json"):
        with open(path) as f:
            records = json.load(f)
        header = list(records[0])
        return header, [["" if r.get(k) is None else str(r[k]) for k in header] for r in records]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def csv_table(path: str, name: str, roles: dict | None = None, missing: tuple[str, ...] = ()) -> Table:
    """Reads a table file with explicit column roles: ``{"numerical": [...], "categorical": [...], "target": c}``.

    Columns are 0-based indices or header names; ``roles`` defaults to ``CSV_TABLES[name]`` (the paper's tables).
    Categorical values are coded by their sorted distinct strings; rows with an unparsable numeric cell, or with a
    cell of a used column in ``missing``, are dropped.
    """
    if roles is None and name not in CSV_TABLES:
        raise ConfigError(f"tabular.dataset={name!r}: CSV tables are {sorted(CSV_TABLES)}.")
    if not os.path.isfile(path):
        raise ConfigError(f"tabular.csv_path={path!r} does not exist; point it at the {name} CSV (header row first).")
    header, rows = read_rows(path)
    roles = CSV_TABLES[name] if roles is None else roles
    col = lambda c: c if isinstance(c, int) else header.index(c)  # noqa: E731
    num_cols, cat_cols, target = (
        [col(c) for c in roles["numerical"]],
        [col(c) for c in roles["categorical"]],
        col(roles["target"]),
    )
    used = [*num_cols, *cat_cols, target]
    width = max(used) + 1
    good = []
    for r in rows:
        if len(r) < width or any(r[j].strip() in missing for j in used):
            continue
        try:
            good.append(([float(r[j]) for j in num_cols], r))
        except ValueError:
            continue
    if len(good) < 4:
        raise ConfigError(f"tabular.csv_path={path!r}: {len(good)} readable rows; is it the {name} table?")
    num_NxF = np.array([g[0] for g in good], np.float64).reshape(len(good), len(num_cols))

    def codes(j):
        values = [g[1][j].strip() for g in good]
        levels = sorted(set(values))
        return np.array([levels.index(v) for v in values], np.int32), len(levels)

    cats = [codes(j) for j in cat_cols]
    y_N, k = codes(target)
    cat_NxFc = np.stack([c for c, _ in cats], axis=1) if cats else np.zeros((len(good), 0), np.int32)
    return Table(num_NxF, cat_NxFc, y_N, tuple(c for _, c in cats), k)


def packaged_path(name: str) -> str:
    """The file of a ``PACKAGED_TABLES`` table inside its installed wheel (found without importing the package)."""
    spec = PACKAGED_TABLES[name]
    try:
        dist = metadata.distribution(spec["package"])
    except metadata.PackageNotFoundError:
        raise ConfigError(
            f"tabular.dataset={name!r} reads {spec['file']} from the {spec['package']} package; "
            f"pip install {spec['package']}=={spec['version']} (pinned in requirements.txt)."
        ) from None
    if dist.version != spec["version"]:
        raise ConfigError(
            f"tabular.dataset={name!r}: {spec['package']} {dist.version} is installed; the study pins "
            f"{spec['version']} (pip install {spec['package']}=={spec['version']})."
        )
    return str(dist.locate_file(spec["file"]))


def packaged_table(name: str) -> Table:
    """A real table shipped inside a pinned PyPI package, read by ``csv_table`` with its declared roles."""
    spec = PACKAGED_TABLES[name]
    roles = {k: spec[k] for k in ("numerical", "categorical", "target")}
    return csv_table(packaged_path(name), name, roles=roles, missing=spec["missing"])


def load(name: str, *, num_rows: int, seed: int, csv_path: str = "", **synthetic_kw) -> Table:
    """The named table: ``synthetic`` (``num_rows`` rows), a packaged, scikit-learn or CSV table."""
    if name == "synthetic":
        return synthetic_table(num_rows, seed=seed, **synthetic_kw)
    if name in PACKAGED_TABLES:
        return packaged_table(name)
    if name in CSV_TABLES:
        return csv_table(csv_path, name)
    return sklearn_table(name)


def split(table: Table, num_train: int, num_heldout: int, seed: int) -> tuple[Table, Table]:
    """A seeded split into ``num_train`` training rows and ``num_heldout`` held-out rows (both capped by the table)."""
    perm = np.random.default_rng([seed, 5]).permutation(len(table))
    num_heldout = min(num_heldout, len(table) // 4)
    heldout = perm[:num_heldout]
    train = perm[num_heldout : num_heldout + num_train]
    return table.take(np.sort(train)), table.take(np.sort(heldout))


@dataclasses.dataclass(frozen=True)
class Encoder:
    mean_F: np.ndarray
    std_F: np.ndarray
    cards: tuple[int, ...]
    num_classes: int

    @classmethod
    def fit(cls, table: Table) -> "Encoder":
        std = table.num_NxF.std(axis=0)
        return cls(table.num_NxF.mean(axis=0), np.where(std > 0, std, 1.0), table.cards, table.num_classes)

    @property
    def layout(self) -> tuple[int, tuple[int, ...]]:
        """(numeric columns, categories per one-hot block): the categorical columns, then the label."""
        return len(self.mean_F), (*self.cards, self.num_classes)

    @property
    def width(self) -> int:
        return len(self.mean_F) + sum(self.cards) + self.num_classes

    def encode(self, table: Table) -> np.ndarray:
        """``[N, width]`` float32: standardised numerics, one-hot categoricals, one-hot label."""
        parts = [(table.num_NxF - self.mean_F) / self.std_F]
        for j, card in enumerate(self.cards):
            parts.append(np.eye(card)[table.cat_NxFc[:, j]])
        parts.append(np.eye(self.num_classes)[table.y_N])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def decode(self, x_NxD: np.ndarray) -> Table:
        """Inverse of ``encode`` for any real rows: numerics un-standardised, argmax per one-hot block."""
        x_NxD = np.asarray(x_NxD, np.float64)
        f = len(self.mean_F)
        num = x_NxD[:, :f] * self.std_F + self.mean_F
        cats, at = [], f
        for card in self.cards:
            cats.append(np.argmax(x_NxD[:, at : at + card], axis=1))
            at += card
        y = np.argmax(x_NxD[:, at : at + self.num_classes], axis=1).astype(np.int32)
        cat_NxFc = np.stack(cats, axis=1).astype(np.int32) if cats else np.zeros((len(x_NxD), 0), np.int32)
        return Table(num, cat_NxFc, y, self.cards, self.num_classes)


def save(
    path: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_heldout: np.ndarray,
    y_heldout: np.ndarray,
    layout: tuple[int, tuple[int, ...]] | None = None,
) -> str:
    """Writes the encoded table the engine's ``data.source='tabular'`` reads; ``layout`` (``Encoder.layout``): the
    column layout the hybrid model (``model.name='tabddpm'``) needs."""
    extra = {} if layout is None else {"num_numeric": np.int64(layout[0]), "cards": np.asarray(layout[1], np.int64)}
    np.savez(path, x=x_train, y=y_train, x_heldout=x_heldout, y_heldout=y_heldout, **extra)
    return path
