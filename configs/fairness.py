"""Pepin et al.'s fairness identities (issue 8 part 3) on a 3-class table with a group attribute, 3 seeds.

  python launch.py --config=configs/fairness.py --workdir=docs/results/classify --mode=all

1500 rows, group A = 1 for 30% (other class priors, noisier features); an MLP (1 x 128) trained 30 epochs is the base
classifier and the GenDataCarto probe. For D = the Hotspot-Memorized and the Noisy-Outlier quadrant: the closed forms
against the lookup memorizer (exact), against fine-tuning D to 100% train accuracy, and against pruning D and
retraining; then the minimal memorized mass that equalises the largest TPR gap. Expected: about 1 min on 2 shared
CPU cores; lookup identity error 1.1e-16; fine-tuning errors 0.01-0.06 (drift off D); 2.0% memorized mass closes a
TPR gap of 0.32 to 0.006 (lookup) / 0.03 (fine-tuned MLP). ``:quick`` is a smoke version (tests).
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
