"""The one hash of the data step: XXH64 (the xxHash specification) of each string's UTF-8 bytes, with a seed.

Every hash that can reach an output goes through here: dedup content keys and keeper digests, MinHash word
shingles, quality n-grams and repeated lines, split-profile word buckets and the mixing draw. polars' own
`hash()` is fast but not promised stable across polars versions, so an upgrade could move documents between
kept and dropped; XXH64 is a published algorithm whose values are fixed (tests pin some). polars-hash computes
it in Rust over the column, about as fast as polars' hash.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash as plh

SEED_MODULUS = 1 << 64
"""XXH64 seeds are 64-bit: larger or negative seeds are taken modulo 2**64."""


def xxh64(text: pl.Series, seed: int = 0) -> np.ndarray:
    """uint64 per string: XXH64 of its UTF-8 bytes under `seed` (strings only, no nulls)."""
    column = text.rename("text").to_frame().select(plh.col("text").nchash.xxhash64(seed=seed % SEED_MODULUS))
    return column["text"].to_numpy()
