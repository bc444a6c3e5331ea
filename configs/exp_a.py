"""Experiment A (paper §6.1): a character transformer with keyed canaries; prune the top 5% and 10% by m, with
controls.

  python launch.py --config=configs/exp_a.py --workdir=runs/exp_a --mode=all
  python launch.py --config=configs/exp_a.py:gru --workdir=runs/exp_a_gru --mode=all   # the same with a GRU (or :lstm)

1500 training sequences of 64 characters from CPython's pydoc topics, 10 canaries "the secret code of <key> is
<6 digits>." inserted 8 times each (80 copies, 5.3% of the data), each copy at the start of its own row
(data.canary_placement=row_start: greedy decoding starts from the context the copy was trained in). The paper's
model is an LSTM, but ours extracts no canary greedily at these settings and a GRU only 20 of 30 over 3 seeds
(docs/results/exp_a/exploration.md), so the default model is the 2-layer, 128-wide GPT-2-style character
transformer, batch 32, Adam 3e-3 with a warmup-stable-decay schedule (linear decay to 0 over the last 25% of steps),
10 epochs, whose baseline extracted 10 of 10 canaries for each of 3 seeds. The :gru and :lstm variants keep their
exploration settings (Adam 1e-2, 25 and 20 epochs).
Scores: in-step per-epoch losses; m with a single threshold at the median final loss (percentile 50; the paper's
eps is not published); the eps-sweep variant averages m over 10 thresholds.
Arms per seed, at 5% and 10%: prune by m, by m over the eps sweep, by d, by lowest final loss, by upward variation,
and 3 independent random subsets; token-matched variants (as many optimizer steps as the probe) of the m arm and
the first random subset; the canary-free reference model for the calibrated MIA. Verdicts: pooled Wilson intervals
and an exact within-seed permutation test of each arm against its random subsets (gdc/studies/carto/verdicts.py).
Expected: 22 training runs per seed (~2 minutes each on one CPU core), about 50 minutes per seed; 3 seeds. Run
seeds side by side with --config.study.seeds='(S,)' into the same workdir, then --mode=report with all seeds.
The report is docs/results/exp_a/report.md.
"""

import ml_collections

from configs import common


def get_config(arg: str = "transformer") -> ml_collections.ConfigDict:
    if arg not in ("transformer", "gru", "lstm"):
        raise ValueError(f"configs/exp_a.py: unknown arg {arg!r}; use transformer, gru or lstm.")
    tf = arg == "transformer"
    c = common.base_config()
    common.update(
        c,
        data=common.CANARY_DATA,
        model=dict(name=arg, width=128, depth=2 if tf else 1, num_heads=4),
        train=dict(
            common.CANARY_TRAIN,
            num_epochs=10 if tf else {"gru": 25, "lstm": 20}[arg],
            learning_rate=3e-3 if tf else 1e-2,
        ),
        **common.CANARY_RUN,
        study=dict(
            common.CANARY_STUDY,
            methods=("prune_m", "prune_m_sweep", "prune_upward", "prune_d", "prune_low_final_loss", "prune_random"),
            prune_fractions=(0.05, 0.10),
            token_matched=True,
            evaluators=("perplexity", "extraction", "exposure_inserted", "mia"),
        ),
    )
    return c
