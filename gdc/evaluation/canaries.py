"""Canary bookkeeping shared by extraction, exposure and the canary membership attack.

Canaries come from ``dataset.meta["canaries"]`` (gdc/data/canaries.py): "inserted" canaries were written into
training rows, "controls" have the same format but were never trained on. Tokens are utf-8 bytes.

Control-canary sequences (the never-inserted side of the canary MIA) are built here: each control canary is
written ``canary_repeats`` times into held-out rows (distinct rows while there are enough, seeded by
``[seed, 3]``) placed like the inserted copies (offset 0 for ``row_start``; uniform offsets for
``random_offset``).

Decoding contexts (``decode_contexts``): extraction and exposure decode a canary from the context its copies were
trained in. With ``row_start`` that is the canary's prefix at the start of a row, one context per canary. With
``random_offset`` it is each copy's own preceding bytes followed by the prefix ("in-context"), one context per
copy; the controls get the same from their held-out rows. Held-out text is a fresh draw of the same
corpus, so an inserted copy and a control copy differ in whether their canary (and, for the whole-sequence
score, their context) was trained on; the ``secret_mask`` span isolates the secret digits.
"""

from collections.abc import Sequence

import numpy as np

from gdc.data.sources import Dataset

DIGIT_TOKENS = np.arange(ord("0"), ord("9") + 1, dtype=np.int32)
GROUPS = ("inserted", "controls")
Prefix = str | bytes | np.ndarray  # text (utf-8), raw bytes (need not be valid utf-8) or 1-D int tokens


def placement(meta: dict) -> str:
    """The canaries' placement; datasets written before it was recorded placed copies at random offsets."""
    return meta.get("placement", "random_offset")


def encode(text: "str | bytes | np.ndarray") -> np.ndarray:
    """The utf-8 bytes of ``text`` as int32 tokens; bytes are taken as they are, token arrays copied as int32."""
    if isinstance(text, np.ndarray):
        return text.astype(np.int32).reshape(-1)
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int32)


def prefix_tokens(prefix: Prefix) -> np.ndarray:
    """A prompt as int32 tokens: utf-8 of a str, the bytes of bytes, a 1-D int array as it is."""
    if isinstance(prefix, str):
        return encode(prefix)
    if isinstance(prefix, bytes | bytearray):
        return np.frombuffer(bytes(prefix), dtype=np.uint8).astype(np.int32)
    tokens = np.asarray(prefix)
    if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"a token prefix must be a 1-D int array, got {tokens.dtype} of shape {tokens.shape}.")
    return tokens.astype(np.int32)


def prefix_buffer(prefixes: Sequence[Prefix], extra: int) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligned, zero-padded prefix tokens.

    Args:
        prefixes: C prompts: strings, raw bytes or 1-D int token arrays (see ``prefix_tokens``).
        extra: free columns after the longest prefix.

    Returns:
        (buf_CxT int32 with T = longest prefix + extra, prefix_len_C int32).
    """
    encoded = [prefix_tokens(p) for p in prefixes]
    len_C = np.array([len(e) for e in encoded], np.int32)
    if len(encoded) and len_C.min() < 1:
        raise ValueError("every prefix needs at least one byte: the first prediction is read at its last byte.")
    buf_CxT = np.zeros((len(encoded), (len_C.max() if len(encoded) else 0) + extra), np.int32)
    for c, e in enumerate(encoded):
        buf_CxT[c, : len(e)] = e
    return buf_CxT, len_C


def secret_target_mask(offsets_M: np.ndarray, prefix_len_M: np.ndarray, num_digits: int, length: int) -> np.ndarray:
    """``[M, L]`` bool: the targets (``tokens[:, 1:]`` positions) that are the secret digits of a canary copy.

    A canary starting at byte ``offset`` of a row has its j-th digit at token ``offset + prefix_len + j``,
    which is target ``offset + prefix_len + j - 1``.
    """
    start_M = np.asarray(offsets_M) + np.asarray(prefix_len_M) - 1
    cols_L = np.arange(length)
    return (cols_L[None, :] >= start_M[:, None]) & (cols_L[None, :] < start_M[:, None] + num_digits)


def member_sequences(dataset: Dataset) -> dict[str, np.ndarray]:
    """Every inserted canary copy as it was trained on: its training row.

    Returns:
        ``tokens`` [M, L+1], ``token_mask`` [M, L] (the row's own), ``secret_mask`` [M, L], ``canary`` [M]
        (index into the inserted list) and ``row`` [M] (training id).
    """
    meta = dataset.meta["canaries"]
    rows, offsets, which, prefix_lens = [], [], [], []
    for i, c in enumerate(meta["inserted"]):
        rows += list(c["ids"])
        offsets += list(c["offsets"])
        which += [i] * len(c["ids"])
        prefix_lens += [len(encode(c["prefix"]))] * len(c["ids"])
    row_M = np.array(rows, np.int64)
    tokens = dataset.train["tokens"][row_M]
    return {
        "tokens": tokens,
        "token_mask": dataset.train["token_mask"][row_M],
        "secret_mask": secret_target_mask(
            np.array(offsets), np.array(prefix_lens), meta["secret_digits"], tokens.shape[1] - 1
        ),
        "canary": np.array(which, np.int32),
        "row": row_M,
    }


def control_sequences(dataset: Dataset, seed: int = 0) -> dict[str, np.ndarray]:
    """Each control canary written ``canary_repeats`` times into held-out rows (see the module docstring).

    Returns:
        ``tokens`` [M, L+1], ``token_mask`` [M, L], ``secret_mask`` [M, L], ``canary`` [M] (index into the
        controls list) and ``row`` [M] (held-out id).
    """
    meta = dataset.meta["canaries"]
    controls, repeats = meta["controls"], meta["canary_repeats"]
    heldout = dataset.heldout["tokens"]
    num, row_len = len(controls) * repeats, heldout.shape[1]
    rng = np.random.default_rng([seed, 3])
    row_M = rng.choice(len(heldout), size=num, replace=num > len(heldout))
    at_start = placement(meta) == "row_start"
    tokens = heldout[row_M].copy()
    offsets, prefix_lens = np.zeros(num, np.int64), np.zeros(num, np.int64)
    for m in range(num):
        canary = controls[m // repeats]
        text = encode(canary["text"])
        if len(text) > row_len:
            raise ValueError(f"control canary of {len(text)} bytes does not fit a held-out row of {row_len}.")
        offsets[m] = rng.integers(0, row_len - len(text) + 1)  # drawn either way: same stream
        offsets[m] = 0 if at_start else offsets[m]
        tokens[m, offsets[m] : offsets[m] + len(text)] = text
        prefix_lens[m] = len(encode(canary["prefix"]))
    return {
        "tokens": tokens,
        "token_mask": dataset.heldout["token_mask"][row_M],
        "secret_mask": secret_target_mask(offsets, prefix_lens, meta["secret_digits"], row_len - 1),
        "canary": np.repeat(np.arange(len(controls), dtype=np.int32), repeats),
        "row": row_M.astype(np.int64),
        "offset": offsets,
    }


def decode_contexts(dataset: Dataset, group: str, seed: int = 0) -> dict:
    """The contexts a group's canaries are decoded from (see the module docstring).

    Args:
        dataset: the run's dataset with ``meta["canaries"]``.
        group: "inserted" or "controls".
        seed: the control sequences' seed (``control_sequences``).

    Returns:
        ``contexts``: list of int32 token arrays, each ending with the canary's prefix; ``canary`` int [X]: the
        canary (index into the group's list) each context belongs to; ``in_context``: whether the contexts are
        the copies' own (``random_offset``) rather than one bare prefix per canary.
    """
    meta = dataset.meta["canaries"]
    records = meta[group]
    if placement(meta) == "row_start":
        return {
            "contexts": [encode(r["prefix"]) for r in records],
            "canary": np.arange(len(records)),
            "in_context": False,
        }
    if group == "inserted":
        rows, offsets, which = [], [], []
        for i, c in enumerate(records):
            rows += list(c["ids"])
            offsets += list(c["offsets"])
            which += [i] * len(c["ids"])
        tokens = dataset.train["tokens"]
    else:
        seqs = control_sequences(dataset, seed)
        rows, offsets, which = seqs["row"], seqs["offset"], seqs["canary"]
        tokens = dataset.heldout["tokens"]
    contexts = [
        np.concatenate([tokens[r, :o].astype(np.int32), encode(records[c]["prefix"])])
        for r, o, c in zip(rows, offsets, which, strict=True)
    ]
    return {"contexts": contexts, "canary": np.asarray(which), "in_context": True}


def prune_canary_fraction(pruned_ids: np.ndarray, dataset: Dataset) -> dict[str, float]:
    """How much of a pruned set is canaries, and how much of the canaries it removes (paper §10 item 19).

    Args:
        pruned_ids: training ids removed by an intervention (duplicates are counted once).
        dataset: the run's dataset; needs ``train["is_canary"]``.

    Returns:
        ``canary_fraction_of_pruned`` (pruned ids holding a canary / pruned ids; 0 when nothing is pruned),
        ``canary_copies_pruned_fraction`` (pruned canary rows / all canary rows), the counts behind both, and
        ``canaries_fully_pruned`` (inserted canaries none of whose copies is left).
    """
    is_canary_N = np.asarray(dataset.train["is_canary"], bool)
    ids = np.unique(np.asarray(pruned_ids, np.int64))
    if ids.size and (ids.min() < 0 or ids.max() >= len(is_canary_N)):
        raise ValueError(f"pruned ids must lie in [0, {len(is_canary_N)}).")
    num_canary_pruned = int(is_canary_N[ids].sum())
    num_canary_rows = int(is_canary_N.sum())
    inserted = dataset.meta.get("canaries", {}).get("inserted", [])
    fully = sum(bool(np.isin(c["ids"], ids).all()) for c in inserted)
    return {
        "canary_fraction_of_pruned": num_canary_pruned / ids.size if ids.size else 0.0,
        "canary_copies_pruned_fraction": num_canary_pruned / num_canary_rows if num_canary_rows else 0.0,
        "num_pruned": float(ids.size),
        "num_canary_pruned": float(num_canary_pruned),
        "num_canary_rows": float(num_canary_rows),
        "canaries_fully_pruned": float(fully),
    }


def pruned_from_keep(keep_idx: np.ndarray, num_train: int) -> np.ndarray:
    """The training ids not in ``keep_idx`` (ascending int64)."""
    return np.setdiff1d(np.arange(num_train), np.asarray(keep_idx, np.int64))
