"""Typed settings of the tabular diffusion study: the ``tabular`` section of ``configs/tabular_ddpm.py``.

Validated before any data is built or anything compiles; a bad field raises ConfigError naming ``tabular.<field>``.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any, NoReturn

from gdc import config as parse
from gdc.studies.tabular.data import CSV_TABLES, PACKAGED_TABLES, SKLEARN_TABLES

DATASETS = ("synthetic", *PACKAGED_TABLES, *SKLEARN_TABLES, *CSV_TABLES)
MODEL_KINDS = ("gaussian", "multinomial")  # tabular.model: the engine's "ddpm" or "tabddpm"
ARMS = (
    "baseline",
    "tcm",
    "tcmp",
    "dynamic_cut",
    "gdc_prune_m",
    "gdc_prune_d",
    "gdc_downweight_d",
    "random_prune",
    "other_model",  # the same table and settings under the other tabular.model kind (no intervention)
)


@dataclasses.dataclass(frozen=True)
class TabularConfig:
    seeds: tuple[int, ...] = (0, 1, 2)
    datasets: tuple[str, ...] = ("synthetic", "penguins", "cars")  # each runs the whole study into workdir/<name>/
    csv_path: str = ""  # adult / default / shoppers / magic: the CSV file (one CSV table per run)
    num_rows: int = 400  # synthetic: rows generated before the split
    num_train: int = 200
    num_heldout: int = 150
    sizes: tuple[int, ...] = (50, 100, 200)  # Mem. Ratio against N (each <= num_train; num_train reuses the probe)
    # DDPM and training (through the engine).
    model: str = "gaussian"  # "gaussian": one-hot columns as continuous; "multinomial": TabDDPM's hybrid (tabddpm)
    width: int = 256
    depth: int = 3
    diffusion_steps: int = 50
    score_draws: int = 8
    batch_size: int = 25
    epochs: int = 300
    learning_rate: float = 2e-3
    schedule: str = "cosine"  # the engine's train.schedule (cosine: a settled final model to generate from)
    stops: int = 6  # probe checkpoints (evenly spaced) where rows are generated: Mem. Ratio vs epochs; DynamicCut
    # ranks rows by their replica events summed over every stop but the last (the last is the ground truth)
    early_fraction: float = 0.1  # d_i: mean scoring-pass loss over this first fraction of epochs
    eps_percentile: float = 50.0  # m_i: forget events at this percentile of the final losses
    # Memorization measurement.
    generated_factor: float = 2.0  # rows generated per training row
    dedupe: bool = True  # replica test against distinct training rows (copies share their counts)
    # Interventions, all at the same budget.
    arms: tuple[str, ...] = ARMS
    augment_fraction: float = 0.3  # TCM/TCMP rows added, as a fraction of N (the paper's 30 %)
    prune_fraction: float = 0.1  # DynamicCut / GenDataCarto / random pruning
    downweight_alpha: float = 0.5  # gdc_downweight_d: loss weight of the rows gdc_prune_d would remove
    # Sharpness.
    sharp_t: int = 1  # step index of the score Jacobian (small t)
    kappa: float = 1.0
    # The sweep (gdc.studies.tabular.sharp_sweep): step indices, and kappa at these quantiles of the magnitudes of
    # the negative eigenvalues of all generated rows at each step.
    sharp_steps: tuple[int, ...] = (0, 1, 4, 12, 25)
    sharp_quantiles: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)

    def validate(self) -> None:
        if (
            not self.datasets
            or any(d not in DATASETS for d in self.datasets)
            or len(set(self.datasets)) < len(self.datasets)
        ):
            _fail("datasets", self.datasets, f"must be a non-empty tuple of distinct names from {DATASETS}")
        csv_sets = [d for d in self.datasets if d in CSV_TABLES]
        if csv_sets and not self.csv_path:
            _fail("csv_path", self.csv_path, f"must name the {csv_sets[0]} CSV file")
        if len(csv_sets) > 1:
            _fail("datasets", self.datasets, "may hold at most one CSV table (tabular.csv_path names one file)")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            _fail("seeds", self.seeds, "must be a non-empty tuple of integers >= 0")
        for name in (
            "num_rows",
            "num_train",
            "num_heldout",
            "width",
            "depth",
            "score_draws",
            "batch_size",
            "epochs",
            "stops",
        ):
            _at_least(self, name, 1)
        _at_least(self, "diffusion_steps", 2)
        if self.num_train < 4:
            _fail("num_train", self.num_train, "must be >= 4")
        if not self.sizes or any(not isinstance(s, int) or not 4 <= s <= self.num_train for s in self.sizes):
            _fail("sizes", self.sizes, f"must be integers in [4, num_train={self.num_train}]")
        if self.schedule not in ("constant", "cosine"):
            _fail("schedule", self.schedule, "must be 'constant' or 'cosine'")
        if self.stops > self.epochs:
            _fail("stops", self.stops, f"must be <= tabular.epochs={self.epochs}")
        for name in ("early_fraction", "augment_fraction", "prune_fraction"):
            if not 0.0 < getattr(self, name) < 1.0:
                _fail(name, getattr(self, name), "must lie strictly between 0 and 1")
        if not 0.0 <= self.downweight_alpha < 1.0:
            _fail("downweight_alpha", self.downweight_alpha, "must be in [0, 1)")
        if not 0.0 <= self.eps_percentile <= 100.0:
            _fail("eps_percentile", self.eps_percentile, "must be in 0..100")
        if not self.learning_rate > 0 or not self.generated_factor > 0 or not self.kappa >= 0:
            _fail("learning_rate", self.learning_rate, "(and generated_factor) must be > 0, kappa >= 0")
        if not 0 <= self.sharp_t < self.diffusion_steps:
            _fail("sharp_t", self.sharp_t, f"must be a step index in [0, diffusion_steps={self.diffusion_steps})")
        if self.model not in MODEL_KINDS:
            _fail("model", self.model, f"must be one of {MODEL_KINDS}")
        if not self.sharp_steps or any(
            not isinstance(t, int) or not 0 <= t < self.diffusion_steps for t in self.sharp_steps
        ):
            _fail(
                "sharp_steps", self.sharp_steps, f"must be step indices in [0, diffusion_steps={self.diffusion_steps})"
            )
        if not self.sharp_quantiles or any(not 0.0 < q < 1.0 for q in self.sharp_quantiles):
            _fail(
                "sharp_quantiles", self.sharp_quantiles, "must be a non-empty tuple of numbers strictly between 0 and 1"
            )
        if "baseline" not in self.arms or any(a not in ARMS for a in self.arms):
            _fail("arms", self.arms, f"must include 'baseline' and be drawn from {ARMS}")


def _fail(field: str, value: object, allowed: str) -> NoReturn:
    parse.fail("tabular", field, value, allowed)


def _at_least(cfg: TabularConfig, name: str, minimum: int) -> None:
    parse.int_at_least("tabular", name, getattr(cfg, name), minimum)


def from_mapping(config: Mapping[str, Any]) -> TabularConfig:
    """TabularConfig from a ConfigDict or dict with ``seed`` and ``tabular``; raises ConfigError."""
    _, values = parse.seed_and_values(config, "tabular")
    return parse.build(TabularConfig, "tabular", values, strict_types=True)
