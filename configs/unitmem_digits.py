"""UnitMem / LayerMem of SimCLR encoders on scikit-learn digits, and the hotspot-enrichment test (issue 8 part 4).

  python launch.py --config=configs/unitmem_digits.py --workdir=docs/results/ssl --mode=all

Per seed (3): a candidate encoder f on S_S + S_C and an independent one g on S_S + S_I (MLP 3 x 256 + projection,
NT-Xent, 40 epochs), all 6 vmapped in one program; UnitMem per unit, LayerMem / Delta-LayerMem per layer, and the
odds ratio (permutation p-value) of the top-10% UnitMem units' argmax examples in each GenDataCarto quadrant.
Expected: ~3 min on 2 shared CPU cores; results in docs/results/ssl/report.md. ``:quick`` is a seconds-long version
the tests run.
"""

import dataclasses

import ml_collections

from gdc.ssl.config import SSLConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    ssl = SSLConfig()
    if arg == "quick":
        ssl = dataclasses.replace(
            ssl,
            num_seeds=2,
            num_shared=120,
            num_candidates=40,
            num_independent=40,
            width=32,
            depth=2,
            proj_dim=16,
            epochs=6,
            batch_size=80,
            early_epochs=2,
            unit_augs=3,
            layer_augs=2,
            permutations=200,
        )
    elif arg:
        raise ValueError(f"configs/unitmem_digits.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "ssl": dataclasses.asdict(ssl)})
