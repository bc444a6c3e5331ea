"""LM audit (issues 7 and 21): extraction protocol, MemHunter's inducer and dataset-level test, activation probes.

  python launch.py --config=configs/lm_audit.py --workdir=runs/lm_audit --mode=all
  python launch.py --config=configs/lm_audit.py:quick --workdir=/tmp/lm_audit_quick --mode=all   # tests use it

Per seed: of the first 640 pydoc train-split rows of 65 characters, a random 384 are trained on and 256 others are
the never-trained control (same topics); three candidate groups of 64 trained rows are duplicated 1, 4 and 16 times
through the engine's multiplicity up-sampling. Models (all through gdc.train.loop): the target LSTM 64 units x 2
layers (batch 16, Adam 1e-2, warmup-stable-decay, 20 epochs), the same model without any group row (reference for
the token labels), and the size sweep 32x1, 64x1. Reports the prefix sweep (8..41 characters, the longest a row
allows before a 24-character continuation) scored on the aligned continuation, the whole row and the whole training
text; Freeman's three prompt templates; the dataset-level test's power against |S| (4..48, S drawn from groups of
64) and duplication, with the true prefix and with MemHunter's inducer (a GRU rejection-sampled for 4 rounds of 256
prompts) beside a never-fine-tuned control inducer, and its false-positive rate on never-trained sets; probe AUROC
per layer; the ablation on held-out canaries against random directions at matched perplexity; the hotspot
comparison; 3 seeds (12 training runs). Runtime: 10.6 min wall on 2 CPU cores shared with other jobs (load average
5-11; 32 min under a load of 20-25).
Expected (docs/results/lm_audit/): dup-16 whole-row LCSubstring gap ~7 characters, flat in the prefix; Mann-Whitney
power 1.0 at |S| = 48 for dup 16, ~0.2 for dup 4, chance for dup 1, false positives ~0.05; inducer acceptance
0.07 -> 0.26 with no more rows extracted than its control; probe AUROC 0.84 (reference model 0.70); probe and
random directions overlapping at matched perplexity.
"""

import ml_collections


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.lm_audit = ml_collections.ConfigDict(
        dict(
            seeds=(0, 1, 2),
            num_rows=640,
            num_train=384,
            seq_len=64,
            heldout_fraction=0.05,
            dup_counts=(1, 4, 16),
            group_size=64,
            num_control=256,
            prefix_lengths=(8, 16, 24, 32, 41),
            continuation=24,
            test_prefix=32,
            template_cue=8,
            template_context=16,
            model="lstm",
            width=64,
            depth=2,
            num_heads=4,
            sizes=("32x1", "64x1"),
            epochs=20,
            batch_size=16,
            learning_rate=1e-2,
            warmup_steps=20,
            power_sizes=(4, 8, 16, 32, 48),
            power_reps=200,
            alpha=0.05,
            inducer_prompt=16,
            inducer_width=64,
            inducer_rounds=4,
            inducer_per_round=256,
            inducer_threshold=6.0,
            inducer_fit_steps=60,
            inducer_pretrain_steps=300,
            inducer_eval=1024,
            extract_chars=16,
            probe_folds=4,
            probe_c=1.0,
            probe_fit_fraction=0.5,
            ablation_alphas=(0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0),
            random_directions=5,
            matched_ppl=(1.02, 1.05, 1.1),
            eps_percentile=50.0,
            num_boot=2000,
        )
    )
    if arg == "quick":  # seconds: one seed, a tiny model, few rows and repetitions
        c.lm_audit.update(
            dict(
                seeds=(0,),
                num_rows=120,
                num_train=72,
                seq_len=32,
                dup_counts=(1, 4),
                group_size=8,
                num_control=48,
                prefix_lengths=(8,),
                continuation=8,
                test_prefix=8,
                template_cue=8,  # prompts of 8 (request, prefix) and 25 (chat, roleplay): two compilations, not four
                template_context=17,
                width=16,
                depth=2,
                sizes=(),
                epochs=3,
                batch_size=32,
                warmup_steps=2,
                power_sizes=(2, 4),
                power_reps=20,
                inducer_prompt=6,
                inducer_width=16,
                inducer_rounds=2,
                inducer_per_round=32,
                inducer_threshold=1.0,
                inducer_fit_steps=5,
                inducer_pretrain_steps=10,
                inducer_eval=32,
                extract_chars=6,
                probe_folds=2,
                ablation_alphas=(1.0, 4.0),
                random_directions=2,
                matched_ppl=(1.02,),
                num_boot=200,
            )
        )
    elif arg:
        raise ValueError(f"configs/lm_audit.py: unknown arg {arg!r}; use '' or 'quick'.")
    return c
