"""Carlini-style canaries with one key per canary, inserted into the training rows of a byte-level LM set.

A canary reads `the secret code of <key> is <digits>.`: the key (5 random lowercase letters) sits right next
to the secret, so greedy decoding from each canary's own prefix can recover each secret separately (with a
shared prefix at most one secret can ever be extracted).

Invariants:
* Canaries go into the TRAIN split only. Each copy overwrites the bytes of its own training row (no row holds
  two canaries). Where it goes in the row is the placement (`PLACEMENTS`): `row_start` writes every copy at
  offset 0, so the copy's prefix is read from the start of a row, the context greedy decoding starts from;
  `random_offset` writes it at a uniform offset such that the whole canary lies inside `tokens[row]`, after up to
  `row length - canary length` bytes of other text (evaluators then decode each copy from its own preceding bytes).
* Control canaries have the same format, keys and secrets distinct from the inserted ones, and are never
  inserted: they are the never-trained reference for exposure and extraction.
* Everything is a function of the seed passed in (`np.random.default_rng([seed, 1])`).
"""

import numpy as np

CANARY_FORMAT = "the secret code of {key} is {secret}."
KEY_LENGTH = 5
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))
PLACEMENTS = ("row_start", "random_offset")


def canary_length(secret_digits: int) -> int:
    """Number of bytes of one canary with `secret_digits` digits (35 for 6 digits)."""
    return len(CANARY_FORMAT.format(key="k" * KEY_LENGTH, secret="0" * secret_digits))


def make_canary(key: str, secret: str) -> dict[str, str]:
    """The JSON record of one canary: key, secret, prefix (text up to and including "is ") and text."""
    text = CANARY_FORMAT.format(key=key, secret=secret)
    return {"key": key, "secret": secret, "prefix": text[: len(text) - len(secret) - 1], "text": text}


def sample_canaries(rng: np.random.Generator, num: int, secret_digits: int) -> list[dict[str, str]]:
    """Samples `num` canaries whose keys are pairwise distinct and whose secrets are pairwise distinct.

    Args:
        rng: source of randomness.
        num: how many canaries; at most 10**secret_digits.
        secret_digits: digits per secret; leading zeros are allowed.

    Returns:
        A list of `make_canary` records.
    """
    if num > 10**secret_digits:
        raise ValueError(f"cannot draw {num} distinct secrets of {secret_digits} digits")
    keys: list[str] = []
    while len(keys) < num:
        key = "".join(rng.choice(_LETTERS, size=KEY_LENGTH))
        if key not in keys:
            keys.append(key)
    secret_ints = rng.choice(10**secret_digits, size=num, replace=False)
    return [make_canary(key, f"{s:0{secret_digits}d}") for key, s in zip(keys, secret_ints, strict=True)]


def insert_canaries(
    tokens_NxL: np.ndarray,
    *,
    num_canaries: int,
    canary_repeats: int,
    secret_digits: int,
    num_control_canaries: int,
    seed: int,
    placement: str = "row_start",
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Writes `canary_repeats` copies of each canary into its own rows of a copy of the tokens.

    Args:
        tokens_NxL: int byte tokens of the training split, one row per example (for LM rows L = seq_len + 1);
            L must be >= the canary length.
        num_canaries: canaries to insert.
        canary_repeats: copies of each canary, each in its own row; num_canaries * canary_repeats <= N.
        secret_digits: digits per secret.
        num_control_canaries: canaries of the same format that are generated but never inserted.
        seed: seeds the canaries, rows and offsets (`np.random.default_rng([seed, 1])`).
        placement: one of `PLACEMENTS`; the canaries and rows drawn do not depend on it.

    Returns:
        (tokens_NxL with the canaries written in, is_canary_N bool, meta) where meta is JSON-serialisable:
        {"format", "placement", "secret_digits", "num_canaries", "canary_repeats",
        "inserted": [{"key", "secret", "prefix", "text", "ids", "offsets"}],
        "controls": [{"key", "secret", "prefix", "text"}]}; "ids" are ascending train row ids and "offsets"
        the byte offset of the canary's first byte within each of those rows.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r} is not one of {PLACEMENTS}.")
    num_rows, row_len = tokens_NxL.shape
    length = canary_length(secret_digits)
    if length > row_len:
        raise ValueError(f"a canary has {length} bytes but a row only {row_len}")
    num_copies = num_canaries * canary_repeats
    if num_copies > num_rows:
        raise ValueError(f"{num_copies} canary copies need as many training rows, but there are {num_rows}")
    rng = np.random.default_rng([seed, 1])
    canaries = sample_canaries(rng, num_canaries + num_control_canaries, secret_digits)
    copy_rows = rng.choice(num_rows, size=num_copies, replace=False)
    copy_offsets = rng.integers(0, row_len - length + 1, size=num_copies)  # drawn either way: same rows
    if placement == "row_start":
        copy_offsets = np.zeros_like(copy_offsets)

    tokens_NxL = tokens_NxL.copy()
    is_canary_N = np.zeros(num_rows, dtype=bool)
    inserted = []
    for i, canary in enumerate(canaries[:num_canaries]):
        canary_bytes = np.frombuffer(canary["text"].encode("utf-8"), dtype=np.uint8)
        copies = slice(i * canary_repeats, (i + 1) * canary_repeats)
        order = np.argsort(copy_rows[copies])
        ids = copy_rows[copies][order]
        offsets = copy_offsets[copies][order]
        for row, offset in zip(ids, offsets, strict=True):
            tokens_NxL[row, offset : offset + length] = canary_bytes
        is_canary_N[ids] = True
        inserted.append({**canary, "ids": ids.tolist(), "offsets": offsets.tolist()})
    meta = {
        "format": CANARY_FORMAT,
        "placement": placement,
        "secret_digits": secret_digits,
        "num_canaries": num_canaries,
        "canary_repeats": canary_repeats,
        "inserted": inserted,
        "controls": canaries[num_canaries:],
    }
    return tokens_NxL, is_canary_N, meta


def find_canary_rows(tokens_NxL: np.ndarray, canary_text: str | bytes) -> np.ndarray:
    """Ids of the rows whose bytes contain `canary_text` (utf-8 encoded if a str), ascending, int64."""
    raw = canary_text.encode("utf-8") if isinstance(canary_text, str) else canary_text
    needle = np.frombuffer(raw, dtype=np.uint8).astype(tokens_NxL.dtype)
    if needle.size == 0 or needle.size > tokens_NxL.shape[1]:
        return np.zeros(0, dtype=np.int64)
    windows = np.lib.stride_tricks.sliding_window_view(tokens_NxL, needle.size, axis=1)
    return np.flatnonzero((windows == needle).all(axis=-1).any(axis=-1))


def secret_spans(meta: dict, num_rows: int, seq_len: int) -> np.ndarray:
    """Span ids ``[num_rows, seq_len]`` int8 over the LM targets (target t predicts token t + 1): the secret digits of
    every inserted copy (``meta``: ``insert_canaries``'s), each copy its own span in its row, numbered 1, 2, ... by
    offset within the row; 0 elsewhere. A row holds at most one copy, so the span ids are 0 and 1."""
    span_NxL = np.zeros((num_rows, seq_len), np.int8)
    next_NxL = np.ones(num_rows, np.int8)
    copies = sorted((row, off, c) for c in meta["inserted"] for row, off in zip(c["ids"], c["offsets"], strict=True))
    for row, offset, canary in copies:
        first = offset + len(canary["prefix"]) - 1  # the target predicting the first secret digit
        span_NxL[row, first : first + len(canary["secret"])] = next_NxL[row]
        next_NxL[row] += 1
    return span_NxL
