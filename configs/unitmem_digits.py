"""UnitMem / LayerMem of SimCLR encoders on scikit-learn digits, and the hotspot-enrichment test (issue 8 part 4).

  python launch.py --config=configs/unitmem_digits.py --workdir=runs/ssl --mode=all
  cp runs/ssl/{report.md,results.json,*.png} docs/results/ssl/

Per seed (3): 3 independently initialised candidate encoders f_r on S_S + S_C (500 + 250 digits) and as many
independent ones g_r on S_S + S_I (MLP 3 x 256 + projection, NT-Xent, 80 epochs), all 18 vmapped in one program;
per r an untrained control and a supervised control (the trunk trained by cross-entropy, 9 in a second program).
UnitMem / ClassMem per unit, LayerMem / Delta-LayerMem per layer (S_S and untrained pairs as controls), and the odds
ratio (permutation p-value) of f_0's top-10% UnitMem units' argmax examples in each GenDataCarto quadrant.
Runtime: 12 min wall on the 2-core machine shared with ~9 other jobs (2026-12-05; 18 SSL encoders 10 min,
supervised 1.5 min). Expected (docs/results/ssl/): UnitMem 0.62 / 0.71 / 0.83 against the untrained 0.64 / 0.64 /
0.63, so the excess over the untrained encoder grows with depth from ~0 in h1 to +0.20 in h3; LayerMem above the
control only at the projection; hotspot odds ratio ~1.3 (Fisher-combined p ~ 0.16). ``:quick`` is a seconds-long
version the tests run.
"""

import dataclasses

import ml_collections

from gdc.studies.ssl.config import SSLConfig


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    ssl = SSLConfig()
    if arg == "quick":
        ssl = dataclasses.replace(
            ssl,
            num_seeds=2,
            num_shared=120,
            num_candidates=40,
            num_independent=40,
            encoders=2,
            width=32,
            depth=2,
            proj_dim=16,
            epochs=6,
            batch_size=80,
            early_epochs=2,
            unit_augs=3,
            layer_augs=2,
            permutations=200,
            fast_compile=True,
        )
    elif arg:
        raise ValueError(f"configs/unitmem_digits.py: unknown arg {arg!r}; use '' or 'quick'.")
    return ml_collections.ConfigDict({"seed": 0, "ssl": dataclasses.asdict(ssl)})
