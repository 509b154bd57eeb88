"""Assign each document to train / val / test by a digest of its text: same text, same split, anywhere.

polars' own hash() is not promised stable across versions, so a cryptographic digest is used instead:
an upgrade must not move documents between train and val.
"""

from __future__ import annotations

import hashlib
from typing import Iterable

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


def positions(text: pl.Series) -> np.ndarray:
    """`text_position` of every text."""
    # Handing Python the UTF-8 bytes is several times faster than building str objects to encode again.
    texts = text.cast(pl.Binary).to_list()
    return np.fromiter((text_position(t) for t in texts), dtype=np.float64, count=len(texts))


Bounds = dict[str, tuple[float, float]]
"""Split name -> [low, high) range of positions that lands in it."""


def fixed_bounds(split: Split, sources: Iterable[int]) -> dict[int, Bounds]:
    """The same bounds for every source: shares hold in expectation, each document by its text alone."""
    held_out = split.val + split.test
    bounds = {"train": (held_out, 1.0), "val": (0.0, split.val), "test": (split.val, held_out)}
    return {int(index): bounds for index in sources}


def stratified_bounds(source: np.ndarray, position: np.ndarray, split: Split) -> dict[int, Bounds]:
    """Per source, bounds at the quantiles of its own positions, so each source gives exactly round(share * n)
    documents to val and to test; which documents still follows their text alone."""
    found: dict[int, Bounds] = {}
    for index in np.unique(source):
        ordered = np.sort(position[source == index])
        n = len(ordered)
        n_val, n_test = round(split.val * n), round(split.test * n)

        def cut(k: int) -> float:
            return float(ordered[k]) if k < n else 1.0

        val_end, test_end = cut(n_val), cut(n_val + n_test)
        found[int(index)] = {"val": (0.0, val_end), "test": (val_end, test_end), "train": (test_end, 1.0)}
    return found


def split_codes(position: np.ndarray, source: np.ndarray, bounds: dict[int, Bounds]) -> np.ndarray:
    """The split of each document as an index into SPLITS (0 train, 1 val, 2 test)."""
    codes = np.zeros(len(position), dtype=np.int8)
    for index in np.unique(source):
        rows = source == index
        for code, name in ((1, "val"), (2, "test")):
            low, high = bounds[int(index)][name]
            codes[rows & (position >= low) & (position < high)] = code
    return codes


def assign_splits(frame: pl.DataFrame, split: Split) -> dict[str, pl.DataFrame]:
    """The frame cut into its three splits (always all three keys), each in the frame's order."""
    position = positions(frame["text"])
    source = frame["source"].to_numpy()
    bounds = stratified_bounds(source, position, split) if split.stratify else fixed_bounds(split, np.unique(source))
    codes = split_codes(position, source, bounds)
    return {name: frame.filter(pl.Series(codes == code)) for code, name in enumerate(SPLITS)}
