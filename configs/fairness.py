"""Memorization and fairness (Pepin et al.) on a 3-class table with a group attribute and on a bundled real table.

  python launch.py --config=configs/fairness.py --workdir=docs/results/classify --mode=all

1500 rows, group A = 1 for 30% (other class priors, noisier features); an MLP (1 x 128) trained 30 epochs is the base
classifier and the GenDataCarto probe. Pepin et al.'s results: for statistical parity, equal opportunity (every
class) and equalized odds, the least and largest memorized mass of a zero-bias set (linear programs; D free to pick
the base model's errors, or blind to them), the closed-form bounds on it, the equalized-odds ratio condition, and
the least set memorized by the lookup memorizer and by fine-tuning the MLP, each against as many random rows; the
same on scikit-learn's bundled diabetes table (group = sex, 2 and 3 label bins, logistic regression; 200 bootstrap
resamples). Then the derived check: the conditional-probability identities (exact by construction) against
memorizing / pruning the Hotspot-Memorized and Noisy-Outlier quadrants, and the least mass equalising one class's TPR.
Expected: 2.5 min wall on 2 shared CPU cores (40 s per seed); no zero-SP set on the synthetic table (0/3 seeds);
equal opportunity least mass 0.035 (0.123 blind), lookup gap 0.32 -> 0.002 (random rows 0.31), fine-tuned MLP
0.27; ratio condition fails 3/3; diabetes 2 bins: SP least mass 0.096 between bounds 0.093 and 0.106; identity
error 1.1e-16. ``:quick`` is a smoke version (tests).
"""

import dataclasses

import ml_collections

from gdc.studies.classify.config import FairnessConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    cfg = FairnessConfig()
    if arg == "quick":
        cfg = dataclasses.replace(
            cfg,
            num_train=120,
            width=16,
            epochs=4,
            batch_size=20,
            early_epochs=1,
            finetune_epochs=2,
            max_rounds=2,
            real_table_classes=(2,),
            bootstrap=5,
        )
    elif arg:
        raise ValueError(f"configs/fairness.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "classify": {"part": "fairness", **dataclasses.asdict(cfg)}})
