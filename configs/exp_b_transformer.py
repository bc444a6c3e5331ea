"""Experiment B (paper §6.2, scaled to CPU): a GPT-2-style character transformer with keyed canaries; down-weight
the Hotspot-Memorized quadrant by alpha = 0.5 against random down-weighting of equal-size sets.

  python launch.py --config=configs/exp_b_transformer.py --workdir=runs/exp_b --mode=all

Data as experiment A (1500 sequences of 64 characters, 10 canaries x 8 copies, each at the start of its row). 2
layers, width 128, 4 heads; batch 32, Adam 3e-3 with warmup-stable-decay, 10 epochs: the transformer extracts its
canaries greedily from epoch ~6 (docs/results/exp_a/exploration.md), and its held-out loss is lowest near epoch 9.
Scores: in-step per-epoch losses, m with a single threshold at the median final loss; hotspots are the quadrant
d <= median, m > median. Arms per seed: down-weight hotspots (alpha 0.5) and 3 random down-weight sets of the same
size; the canary-free reference for the calibrated MIA. Exposure is exact over all 10^6 secrets, decoded through
the transformer's KV cache (seconds per canary; benchmarks/exposure_cost.py).
Expected: 6 training runs per seed, a few minutes each on one CPU core; 3 seeds. The report is
docs/results/exp_b/report.md.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    del arg
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name="transformer", width=128, depth=2, num_heads=4),
        train=dict(common.CANARY_TRAIN, num_epochs=10, learning_rate=3e-3),
        **common.CANARY_RUN,
        study=dict(
            common.CANARY_STUDY,
            methods=("downweight_hotspot", "downweight_random"),
            alpha=0.5,
            token_matched=False,
            evaluators=("perplexity", "extraction", "exposure", "mia"),
        ),
    )
    return c
