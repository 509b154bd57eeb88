"""Does val/test look like train? Length distribution, vocabulary overlap and unigram divergence per split.

Statistics are gathered batch by batch: a length histogram and hashed counts of whitespace-separated words (2**20 buckets) per
split, so the report costs fixed memory however large the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from llmrecipe.data.words import lowercase_word_hashes

BUCKETS = 1 << 20
LENGTH_EDGES = np.array([0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, np.inf])
MAX_OOV = 0.2
"""Warn when more than this share of a held-out split's words never occurs in train."""
MAX_DIVERGENCE = 0.3
"""Warn when the Jensen-Shannon divergence (bits) of unigram distributions exceeds this."""
MAX_LENGTH_RATIO = 2.0
"""Warn when mean document lengths differ by more than this factor."""


@dataclass
class ProfilePart:
    """One batch's contribution to a split's profile, sparse (it travels back from a worker process)."""

    docs: int
    chars: int
    lengths: np.ndarray
    buckets: np.ndarray
    """Word buckets that occur, ascending."""
    counts: np.ndarray

    @classmethod
    def of(cls, text: pl.Series, buckets: np.ndarray | None = None) -> "ProfilePart":
        """The profile of `text`; `buckets`: the `word_buckets` of its words when already known."""
        chars = text.str.len_chars().to_numpy()
        per_word = buckets if buckets is not None else word_buckets(lowercase_word_hashes(text)[1])
        dense = np.bincount(per_word, minlength=BUCKETS)  # cheaper than a sort
        present = np.flatnonzero(dense)
        return cls(len(chars), int(chars.sum()), np.histogram(chars, bins=LENGTH_EDGES)[0], present, dense[present])


def word_buckets(hashes: np.ndarray) -> np.ndarray:
    """The bucket (int64 below BUCKETS) each lower-cased word hash is counted in."""
    return (hashes % np.uint64(BUCKETS)).astype(np.int64)


class SplitProfile:
    def __init__(self) -> None:
        self.lengths = np.zeros(len(LENGTH_EDGES) - 1, dtype=np.int64)
        self.words = np.zeros(BUCKETS, dtype=np.int64)
        self.docs = 0
        self.chars = 0

    def add(self, text: pl.Series) -> None:
        self.merge(ProfilePart.of(text))

    def merge(self, part: ProfilePart) -> None:
        self.docs += part.docs
        self.chars += part.chars
        self.lengths += part.lengths
        self.words[part.buckets] += part.counts

    def mean_length(self) -> float:
        return self.chars / self.docs if self.docs else 0.0


def compare(train: SplitProfile, held_out: SplitProfile) -> dict:
    """How one held-out split differs from train, with the warnings it deserves."""
    p, q = train.words / max(train.words.sum(), 1), held_out.words / max(held_out.words.sum(), 1)
    oov = float(held_out.words[train.words == 0].sum() / max(held_out.words.sum(), 1))
    ratio = held_out.mean_length() / train.mean_length() if train.mean_length() and held_out.docs else 1.0
    report = {
        "docs": held_out.docs,
        "mean_chars": round(held_out.mean_length(), 1),
        "length_histogram": held_out.lengths.tolist(),
        "oov_word_share": round(oov, 4),
        "vocabulary_overlap": round(float(((held_out.words > 0) & (train.words > 0)).sum() / max((held_out.words > 0).sum(), 1)), 4),
        "unigram_js_divergence_bits": round(js_divergence(p, q), 4),
        "warnings": [],
    }
    if held_out.docs and train.docs:
        if oov > MAX_OOV:
            report["warnings"].append(f"{oov:.0%} of its words never occur in train")
        if report["unigram_js_divergence_bits"] > MAX_DIVERGENCE:
            report["warnings"].append(f"unigram divergence from train is {report['unigram_js_divergence_bits']} bits")
        if not 1 / MAX_LENGTH_RATIO <= ratio <= MAX_LENGTH_RATIO:
            report["warnings"].append(f"documents are {ratio:.2f}x as long as train's on average")
    return report


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    if not p.any() or not q.any():
        return 0.0
    m = (p + q) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        kl_p = np.where(p > 0, p * np.log2(p / m), 0.0).sum()
        kl_q = np.where(q > 0, q * np.log2(q / m), 0.0).sum()
    return float((kl_p + kl_q) / 2)


def mismatch_report(profiles: dict[str, SplitProfile]) -> dict:
    """{"train": {...}, "val": {...}, "test": {...}} comparisons of each held-out split against train."""
    train = profiles["train"]
    report = {"train": {"docs": train.docs, "mean_chars": round(train.mean_length(), 1), "length_histogram": train.lengths.tolist()},
              "length_bins": [f"{int(lo)}-{hi:g}" for lo, hi in zip(LENGTH_EDGES[:-1], LENGTH_EDGES[1:])]}
    for name in ("val", "test"):
        report[name] = compare(train, profiles[name])
    return report
