"""Extraction metrics (Freeman et al. protocol) on a generated continuation vs the true one.

Characters are the decoded bytes; "tokens" are whitespace-separated words (the model itself is byte-level, so its
own tokens are the characters). ROUGE-L is the word-level longest common *subsequence*: precision |LCS| / |generated|
(MemHunter's score; ``rouge_p_chars`` is the same over characters), recall |LCS| / |reference|, F the harmonic
mean. The longest common *substring* (contiguous) is Freeman's headline metric.
Exact match: the generated text equals the reference. ``longest_in`` is the longest common substring of a text and
a whole corpus (every row of a source, joined with a separator that never occurs in text), the score against the
whole source rather than the aligned continuation. ``wilson`` and ``t_interval`` are the report's intervals.
"""

from collections.abc import Sequence

import numpy as np
from scipy import stats

SEP = "\x00"  # joins corpus rows; byte 0 never occurs in the text corpora (and a match never spans two rows)


def longest_common_substring(a: Sequence, b: Sequence) -> int:
    """Length of the longest contiguous run shared by ``a`` and ``b`` (strings or token lists); O(|a| |b|)."""
    best, prev = 0, [0] * (len(b) + 1)
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                best = max(best, cur[j])
        prev = cur
    return best


def lcs_length(a: Sequence, b: Sequence) -> int:
    """Length of the longest common subsequence (not necessarily contiguous) of ``a`` and ``b``."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(generated: Sequence, reference: Sequence) -> tuple[float, float, float]:
    """(precision, recall, F1) of the LCS; 0 for an empty side."""
    lcs = lcs_length(generated, reference)
    p = lcs / len(generated) if len(generated) else 0.0
    r = lcs / len(reference) if len(reference) else 0.0
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return p, r, f


def to_text(tokens: np.ndarray) -> str:
    """Byte tokens to a string (invalid utf-8 replaced)."""
    return bytes(np.asarray(tokens).astype(np.uint8).tolist()).decode("utf-8", errors="replace")


METRICS = ("lcs_chars", "lcs_words", "rouge_p", "rouge_r", "rouge_f", "rouge_p_chars", "exact", "exact8")
EXACT_HEAD = 8  # "exact8": the first 8 generated characters equal the reference's


def score_pairs(generated_NxT: np.ndarray, reference_NxT: np.ndarray) -> dict[str, np.ndarray]:
    """Every metric of ``METRICS`` per row, comparing generated and reference byte tokens.

    Returns:
        name -> f64 [N]: ``lcs_chars`` (longest common substring in characters), ``lcs_words`` (in words),
        ``rouge_p`` / ``rouge_r`` / ``rouge_f`` (word-level ROUGE-L), ``rouge_p_chars`` (ROUGE-L precision over
        characters, the byte-level model's own tokens), ``exact`` (0/1) and ``exact8`` (0/1: the first
        ``EXACT_HEAD`` characters match).
    """
    out = {name: np.zeros(len(generated_NxT)) for name in METRICS}
    for i, (gen, ref) in enumerate(zip(generated_NxT, reference_NxT, strict=True)):
        g, r = to_text(gen), to_text(ref)
        gw, rw = g.split(), r.split()
        out["lcs_chars"][i] = longest_common_substring(g, r)
        out["lcs_words"][i] = longest_common_substring(gw, rw)
        out["rouge_p"][i], out["rouge_r"][i], out["rouge_f"][i] = rouge_l(gw, rw)
        out["rouge_p_chars"][i] = rouge_l(g, r)[0]
        out["exact"][i] = float(g == r)
        out["exact8"][i] = float(np.array_equal(gen[:EXACT_HEAD], ref[:EXACT_HEAD]))
    return out


def bootstrap_gap(
    train_N: np.ndarray, control_M: np.ndarray, *, num_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float]:
    """Mean(train) - mean(control) with a percentile bootstrap interval (each group resampled on its own).

    Returns:
        ``gap``, ``lo``, ``hi`` (the ``level`` interval), ``train_mean``, ``control_mean``.
    """
    train_N, control_M = np.asarray(train_N, np.float64), np.asarray(control_M, np.float64)
    if len(train_N) == 0 or len(control_M) == 0:
        raise ValueError("bootstrap_gap needs at least one train and one control value.")
    rng = np.random.default_rng(seed)
    boot_t = train_N[rng.integers(0, len(train_N), (num_boot, len(train_N)))].mean(axis=1)
    boot_c = control_M[rng.integers(0, len(control_M), (num_boot, len(control_M)))].mean(axis=1)
    lo, hi = np.percentile(boot_t - boot_c, [50 * (1 - level), 50 * (1 + level)])
    return {
        "gap": float(train_N.mean() - control_M.mean()),
        "lo": float(lo),
        "hi": float(hi),
        "train_mean": float(train_N.mean()),
        "control_mean": float(control_M.mean()),
    }


def join_rows(rows_NxT: np.ndarray) -> str:
    """A corpus string of byte-token rows, joined by ``SEP`` (so no common substring spans two rows)."""
    return SEP.join(to_text(r) for r in rows_NxT)


def longest_in(text: str, corpus: str) -> int:
    """Length of the longest substring of ``text`` that occurs in ``corpus`` (= the longest common substring).

    Two pointers over ``text``: a substring of a match is a match, so the window ``text[i:j]`` only grows at its
    right end or drops its left character; O(|text|) ``in`` searches of the corpus.
    """
    best, i, j = 0, 0, 0
    while j < len(text):
        if text[i : j + 1] in corpus:
            j += 1
            best = max(best, j - i)
        elif i < j:
            i += 1
        else:
            i, j = i + 1, j + 1
    return best


def wilson(k: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of the proportion ``k / n`` (NaNs when ``n == 0``)."""
    if n == 0:
        return float("nan"), float("nan")
    p, den = k / n, 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, float(mid - half)), min(1.0, float(mid + half))


def t_interval(values, level: float = 0.95) -> dict[str, float]:
    """Mean and its Student-t interval over the finite ``values`` (seeds); NaN bounds with fewer than 2."""
    v = np.asarray([x for x in values if x is not None], np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    half = stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size) if v.size > 1 else np.nan
    return {"mean": float(v.mean()), "lo": float(v.mean() - half), "hi": float(v.mean() + half), "n": int(v.size)}
