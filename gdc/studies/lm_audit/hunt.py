"""MemHunter in the audit, per seed: the prompt inducer against the target, beside its never-fine-tuned control.

1. Pre-train the inducer (``inducer.pretrain``) on public text: every window of the held-out split's rows, which no
   model of the audit trains on.
2. Rejection sampling against the target (``inducer.rejection_sampling``): the target continues each prompt
   greedily by ``continuation`` characters; the reward is the longest substring the continuation shares with the
   *known* training rows (the ordinary rows, never the candidate groups, so the groups stay out of sample for the
   dataset-level test) minus the longest it shares with the public text. Without the subtraction generic text wins:
   runs of "*" or "-" (pydoc's table rules) and common phrases match any large text. The control runs the same
   rounds with the same keys and no fine-tuning.
3. Each inducer then writes ``inducer_eval`` prompts (one shared key) and the target continues them. A row's score
   is the longest substring of the whole row found in any of those continuations; a row counts as *extracted* when
   the score reaches ``extract_chars``. Never-trained control rows are scored the same way: their rate is what
   generic text shared with the continuations gives (the extraction count's null), and their scores are the
   dataset-level test's control sample.
"""

import jax
import numpy as np

from gdc.evaluation import extraction
from gdc.studies.lm_audit import inducer
from gdc.studies.lm_audit import metrics as M
from gdc.studies.lm_audit.config import AuditConfig

ARMS = ("tuned", "control")
EVAL_KEY = 10_000  # fold_in offset of the evaluation prompts' key (rounds use 0..rounds-1)


def settings_of(cfg: AuditConfig) -> inducer.InducerSettings:
    return inducer.InducerSettings(
        prompt_len=cfg.inducer_prompt,
        width=cfg.inducer_width,
        rounds=cfg.inducer_rounds,
        per_round=cfg.inducer_per_round,
        threshold=cfg.inducer_threshold,
        fit_steps=cfg.inducer_fit_steps,
        pretrain_steps=cfg.inducer_pretrain_steps,
    )


def row_scores(rows_NxT: np.ndarray, conts_MxC: np.ndarray) -> np.ndarray:
    """f64 [N]: the longest substring of each whole row found in any continuation."""
    joined = M.join_rows(conts_MxC)
    return np.array([M.longest_in(M.to_text(r), joined) for r in rows_NxT], np.float64)


def run(
    cfg: AuditConfig,
    target,
    *,
    public_NxT: np.ndarray,
    known_NxT: np.ndarray,
    rows: dict[str, np.ndarray],
    mesh,
    seed: int,
) -> dict:
    """Both inducers against ``target``; ``rows`` maps a name (groups, ordinary, control) to the rows to score.

    Returns:
        ``pretrain_loss`` (first, last), and per arm: ``history`` (rounds), ``row_score`` (name -> per-row scores),
        ``extracted`` (name -> rows with score >= extract_chars), ``num_rows``, ``distinct_prompts``,
        ``accepted_total``, ``best`` (the best reward's prompt and continuation, as text).
    """
    settings = settings_of(cfg)
    graphdef, params = inducer.build(settings, seed)
    params, losses = inducer.pretrain(graphdef, params, public_NxT, settings, seed)
    known, public = M.join_rows(known_NxT), M.join_rows(public_NxT)

    def target_fn(prompts_NxP):
        return extraction.greedy_decode(*target, prompts_NxP, cfg.continuation, mesh, batch_size=settings.per_round)

    def reward_fn(conts_NxC):
        texts = [M.to_text(g) for g in conts_NxC]
        return np.array([M.longest_in(t, known) - M.longest_in(t, public) for t in texts], np.float64)

    out: dict = {"pretrain_loss": [losses[0], losses[-1]]}
    eval_key = jax.random.fold_in(jax.random.key(seed), EVAL_KEY)
    for arm in ARMS:
        print(f"[lm_audit] seed {seed}: inducer {arm}", flush=True)
        rs = inducer.rejection_sampling(
            graphdef,
            params,
            target_fn=target_fn,
            reward_fn=reward_fn,
            settings=settings,
            seed=seed,
            fine_tune=arm == "tuned",
        )
        prompts_NxP = inducer.sample(graphdef, rs["params"], cfg.inducer_eval, settings.prompt_len, eval_key)
        conts_NxC = target_fn(prompts_NxP)
        scores = {name: row_scores(r, conts_NxC) for name, r in rows.items()}
        out[arm] = {
            "history": rs["history"],
            "row_score": {name: s.tolist() for name, s in scores.items()},
            "extracted": {name: int((s >= cfg.extract_chars).sum()) for name, s in scores.items()},
            "num_rows": {name: len(s) for name, s in scores.items()},
            "distinct_prompts": len({p.tobytes() for p in prompts_NxP}),
            "eval_reward_mean": float(reward_fn(conts_NxC).mean()),
            "eval_reward_quantiles": np.quantile(reward_fn(conts_NxC), [0.5, 0.9, 0.99]).tolist(),
            "accepted_total": int(len(rs["accepted"])),
            "best": {
                "reward": rs["best"]["reward"],
                "prompt": M.to_text(rs["best"]["prompt"]),
                "continuation": M.to_text(rs["best"]["continuation"]),
            },
        }
    return out
