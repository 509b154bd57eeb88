"""Assign each document to train / val / test by a digest of its text: same text, same split, anywhere.

polars' own hash() is not promised stable across versions, so a cryptographic digest is used instead:
an upgrade must not move documents between train and val.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from llmrecipe.recipe.data import Split

SPLITS = ("train", "val", "test")


def text_position(text: str | bytes) -> float:
    """Where a text (or its UTF-8 bytes) falls in [0, 1): the top 53 bits of its blake2b digest, as many as a
    float holds exactly."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    digest = hashlib.blake2b(data, digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 11) / (1 << 53)


def split_of(text: str, split: Split) -> str:
    """The split one text lands in: below `val` -> val, below `val + test` -> test, else train."""
    position = text_position(text)
    if position < split.val:
        return "val"
    return "test" if position < split.val + split.test else "train"


def assign_splits(frame: pl.DataFrame, split: Split) -> dict[str, pl.DataFrame]:
    """The frame cut into its three splits (always all three keys), each in the frame's order."""
    # Handing Python the UTF-8 bytes is several times faster than building str objects to encode again.
    texts = frame["text"].cast(pl.Binary).to_list()
    positions = np.fromiter((text_position(text) for text in texts), dtype=np.float64, count=len(texts))
    labelled = frame.with_columns(position=pl.Series(positions))
    held_out = split.val + split.test
    bounds = {"train": (held_out, 1.0), "val": (0.0, split.val), "test": (split.val, held_out)}
    return {
        name: labelled.filter(pl.col("position").is_between(low, high, closed="left")).drop("position")
        for name, (low, high) in bounds.items()
    }
