"""LM audit (issue 7): extraction protocol, dataset-level membership test, activation probes, hotspot comparison.

  python launch.py --config=configs/lm_audit.py --workdir=runs/lm_audit --mode=all
  python launch.py --config=configs/lm_audit.py:quick --workdir=/tmp/lm_audit_quick --mode=all   # tests use it

Per seed: 256 pydoc training rows of 64 characters; three candidate groups of 16 rows duplicated 1, 4 and 16
times through the engine's multiplicity up-sampling; 256 never-trained held-out rows as the control. Models (all
through gdc.train.loop): the target LSTM 64 units x 2 layers (batch 16, Adam 1e-2, warmup-stable-decay, 24
epochs), the same model trained without any group row (reference for the token labels), and the size sweep 32x1,
64x1 (plus the target's 64x2). Reports the prefix sweep (8..40 characters, 24-character greedy continuations),
power of the one-sided Mann-Whitney / Welch tests vs |S| and duplication, their false-positive rate on
never-trained sets, probe AUROC per layer, the ablation trade-off and the hotspot comparison, over 3 seeds.
Expected: about 15 minutes on 2 shared CPU cores (12 training runs). Report: docs/results/lm_audit/.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.lm_audit = ml_collections.ConfigDict(
        dict(
            seeds=(0, 1, 2),
            num_train=256,
            seq_len=64,
            heldout_fraction=0.05,
            dup_counts=(1, 4, 16),
            group_size=16,
            num_control=256,
            prefix_lengths=(8, 16, 24, 32, 40),
            continuation=24,
            test_prefix=32,
            model="lstm",
            width=64,
            depth=2,
            num_heads=4,
            sizes=("32x1", "64x1"),
            epochs=24,
            batch_size=16,
            learning_rate=1e-2,
            warmup_steps=20,
            power_sizes=(2, 4, 8, 16),
            power_reps=200,
            fpr_size=16,
            fpr_reps=1000,
            alpha=0.05,
            probe_folds=4,
            probe_c=1.0,
            ablation_alphas=(1.0, 2.0, 4.0),
            random_directions=3,
            eps_percentile=50.0,
            num_boot=2000,
        )
    )
    if arg == "quick":  # seconds: one seed, a tiny model, few rows and repetitions
        c.lm_audit.update(
            dict(
                seeds=(0,),
                num_train=96,
                seq_len=32,
                dup_counts=(1, 4),
                group_size=8,
                num_control=24,
                prefix_lengths=(8,),
                continuation=8,
                test_prefix=8,
                width=16,
                depth=2,
                sizes=(),
                epochs=3,
                batch_size=32,
                warmup_steps=2,
                power_sizes=(2, 4, 8),
                power_reps=20,
                fpr_size=8,
                fpr_reps=50,
                probe_folds=2,
                ablation_alphas=(1.0,),
                random_directions=1,
                num_boot=200,
            )
        )
    elif arg:
        raise ValueError(f"configs/lm_audit.py: unknown arg {arg!r}; use '' or 'quick'.")
    return c
