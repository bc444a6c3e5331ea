"""Freeman et al.'s extraction protocol on a character model: prompts, greedy continuations and their scores.

Scores of a continuation (``gdc.studies.lm_audit.metrics``): against the *aligned* continuation (the row's own next
characters after the prompt's article text: ``score_pairs``), and against the *whole source*: ``lcs_row``, the
longest common substring with the whole row the prompt came from (Freeman et al. compare the output with the whole
original article, whose beginning the prompt holds, so a continuation that repeats the prompt also counts), and
``lcs_corpus``, with the whole training text (every training row): text of the source emitted out of place counts.

Prompt templates. The paper's three attacks are chat prompts for instruction-tuned models; a character model trained
on raw rows has no instructions, so each becomes the prefix construction that plays its role:

* ``request`` (the paper's basic request naming the article): the row's first ``cue`` characters only, the least
  article text that still identifies the row (our rows have no titles);
* ``chat`` (the request after a generic conversational exchange): ``context`` characters of never-trained text,
  different for every row, then the cue, so the model must recall the row after unrelated context;
* ``roleplay`` (a role-play framing plus the article's prefix): one fixed never-trained passage of ``context``
  characters, the same for every row, then the row's prefix up to the longest prompt the row allows
  (``max_prefix`` in all); ``prefix`` is that article prefix alone, the template's plain counterpart.
"""

import numpy as np

from gdc.evaluation import extraction
from gdc.studies.lm_audit import metrics as M

TEMPLATES = ("request", "chat", "roleplay", "prefix")
SOURCE_METRICS = ("lcs_row", "lcs_corpus")
DECODE_ROWS = 128  # rows per greedy-decoding call: one compilation per (model, prompt length) whatever the rows


def template_prompts(
    rows_NxT: np.ndarray, context_NxK: np.ndarray, framing_K: np.ndarray, *, cue: int, max_prefix: int
) -> dict[str, tuple[np.ndarray, int]]:
    """Template name -> (prompts int32 [N, P], where the row's aligned continuation starts).

    Args:
        rows_NxT: the rows (articles).
        context_NxK: never-trained text per row (the chat exchange), K = ``context``.
        framing_K: one never-trained passage (the role-play framing).
        cue: characters of the row in the request and chat templates.
        max_prefix: prompt length of the roleplay template (framing + article prefix).
    """
    rows_NxT = np.asarray(rows_NxT, np.int32)
    n, k = len(rows_NxT), len(framing_K)
    article = max_prefix - k
    if article < 1 or cue < 1:
        raise ValueError(f"cue={cue} and max_prefix={max_prefix} - framing {k} must leave >= 1 article character.")
    framing_NxK = np.tile(np.asarray(framing_K, np.int32), (n, 1))
    return {
        "request": (rows_NxT[:, :cue], cue),
        "chat": (np.concatenate([np.asarray(context_NxK, np.int32), rows_NxT[:, :cue]], axis=1), cue),
        "roleplay": (np.concatenate([framing_NxK, rows_NxT[:, :article]], axis=1), article),
        "prefix": (rows_NxT[:, :article], article),
    }


def source_scores(gen_NxC: np.ndarray, rows_NxT: np.ndarray, corpus: str) -> dict[str, np.ndarray]:
    """``lcs_row`` (longest common substring with the whole row) and ``lcs_corpus`` (with the whole ``corpus``)."""
    out = {name: np.zeros(len(gen_NxC)) for name in SOURCE_METRICS}
    for i, (gen, row) in enumerate(zip(gen_NxC, rows_NxT, strict=True)):
        g = M.to_text(gen)
        out["lcs_row"][i] = M.longest_in(g, M.to_text(row))
        out["lcs_corpus"][i] = M.longest_in(g, corpus)
    return out


def continue_and_score(
    model, rows_NxT: np.ndarray, prompts_NxP: np.ndarray, start: int, c: int, mesh, corpus: str, ablate=None
) -> dict[str, np.ndarray]:
    """Greedy continuation of ``c`` tokens after each prompt, scored against the row's aligned continuation
    ``rows[:, start:start + c]`` (``M.METRICS``) and the whole source (``SOURCE_METRICS``; skipped when ``corpus``
    is None)."""
    gen = extraction.greedy_decode(*model, prompts_NxP, c, mesh, ablate=ablate, batch_size=DECODE_ROWS)
    out = M.score_pairs(gen, rows_NxT[:, start : start + c])
    if corpus is not None:
        out.update(source_scores(gen, rows_NxT, corpus))
    return out
