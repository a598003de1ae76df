"""Rows of token ids in batches: right padding, masks over padded rows, and records that must
fit a model's context (the post-training objectives' and the encoders')."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np


def pad_right(rows: list[list[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded [B, T] ids and each row's length (causal attention never looks right, so
    real tokens are unaffected by the padding)."""
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    ids = np.full((len(rows), int(lengths.max())), pad, dtype=np.int64)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
    return ids, lengths


def length_batches(lengths, size: int):
    """Row indices in batches of `size`, shortest rows first: batches padded little (their
    results are put back by index)."""
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), size):
        yield order[start : start + size]


def real_tokens(lengths: np.ndarray, width: int) -> np.ndarray:
    """The [B, width] mask of the real tokens of right-padded rows of these lengths (an
    encoder's attention mask)."""
    return np.arange(width)[None, :] < lengths[:, None]


def response_mask(ids: np.ndarray, lengths: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """[B, T−1] mask over next-token predictions: position t predicts ids[:, t+1], which is a
    response token when starts ≤ t+1 < length."""
    t = np.arange(1, ids.shape[1])[None, :]
    return (t >= starts[:, None]) & (t < lengths[:, None])


#: What to do about a record that does not fit, for the errors that name one.
TOO_LONG_HINT = ("skip such records with --skip-long (skip_long=True from Python), or start from a model with a longer "
                 "context (`ferrolm pretrain --block-size`)")


def check_fits(ids: list[int], block_size: int, where: str, shifted: bool = True) -> Optional[str]:
    """What is wrong with a record of `ids` for a model of context `block_size`, or None: with
    `shifted`, the ids are a sequence and its next-token targets (one more than the model reads)."""
    if len(ids) - shifted > block_size:
        return f"{where}: {len(ids)} tokens do not fit the context of {block_size}" + \
            (" (+1 for the shifted target)" if shifted else "")
    return None


def keep_fitting(checked: list[tuple[Any, Optional[str]]], skip_long: bool) -> tuple[list, int]:
    """The items of (item, `check_fits` problem) pairs that fit, and how many did not. Those
    are an error unless `skip_long`: one that names the first and counts the rest, so a
    dataset is mended in one pass."""
    problems = [problem for _, problem in checked if problem]
    if problems and not skip_long:
        more = f" (and {len(problems) - 1} more records of this split)" if len(problems) > 1 else ""
        raise ValueError(f"{problems[0]}{more}; {TOO_LONG_HINT}")
    return [item for item, problem in checked if not problem], len(problems)


#: Why records were left out, by the count `encode_splits`' `encode` gives of them.
LEFT_OUT = {"skipped_too_long": "too long for the context", "skipped_identical": "the same tokens on both sides"}


def encode_splits(train: list, val: list, encode, what: str) -> tuple[dict, dict]:
    """{"train", "val"} → the rows `encode(records)` makes of each, and its counts; a split
    left with no rows is an error ("no val {what}", with the records left out and why)."""
    data, counts = {}, {}
    for split, records in (("train", train), ("val", val)):
        data[split], counts[split] = encode(records)
        if not data[split]:
            why = [f"{n} as {LEFT_OUT.get(key, key)}" for key, n in counts[split].items() if n]
            raise ValueError(f"no {split} {what}" + (f" (skipped: {', '.join(why)})" if why else ""))
    return data, counts
