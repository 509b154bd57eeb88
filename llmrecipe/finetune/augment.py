"""Augmentation of train rows: the `dataset.augment` ops (see llmrecipe/recipe/augment.py) applied in order.

Each op reads the rows the ops before it produced and adds its own; nothing is removed or changed in place. A row's
alterations come from a random generator seeded by (the step's seed, the op's position, the copy number, the XXH64
digest of the row's texts), so they are the same on every machine and in every run, and do not depend on where the
row sits in the file or on the other rows. The rows made keep their source row's line number, so a message about
one points at the line it came from.

Rows are of any type: the caller says which of a row's strings are altered (`texts`), how to build a row with new
strings (`rebuild`) and, for `oversample`, what a row's label is.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence, TypeVar

import numpy as np
import polars as pl

from llmrecipe.data.hashing import SEED_MODULUS, xxh64
from llmrecipe.recipe.augment import AugmentOp, CharNoise, Eda, Oversample

Row = TypeVar("Row")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class AugmentStats:
    """What augmentation did to one step's train rows."""

    rows_in: int
    made: dict[str, int] = field(default_factory=dict)
    """Op name -> rows it made (summed when an op is listed twice), in the order the ops first ran."""

    @property
    def rows_out(self) -> int:
        return self.rows_in + sum(self.made.values())

    def as_metrics(self) -> dict[str, int]:
        made = {f"augment_{op}_rows_made": count for op, count in self.made.items()}
        return {"augment_rows_in": self.rows_in, **made, "augment_rows_out": self.rows_out}

    def sentence(self) -> str:
        made = ", ".join(f"{op} made {count:,}" for op, count in self.made.items())
        return f"augmentation of the train rows: {self.rows_in:,} in, {made}; {self.rows_out:,} out"


def augment(rows: Sequence[Row], ops: Sequence[AugmentOp], seed: int, texts: Callable[[Row], list[str]],
            rebuild: Callable[[Row, list[str]], Row],
            label: Callable[[Row], str] | None = None) -> tuple[list[Row], AugmentStats]:
    """The rows followed by the rows every op made, and the counts. `oversample` needs `label`."""
    out, stats = list(rows), AugmentStats(rows_in=len(rows))
    for position, op in enumerate(ops):
        if isinstance(op, Oversample):
            if label is None:
                raise ValueError("oversample balances labels; these rows have none")
            made = oversampled(out, op.target, label, (seed % SEED_MODULUS, position))
        else:
            alter = _eda if isinstance(op, Eda) else _char_noise
            made = altered_copies(out, op, alter, (seed % SEED_MODULUS, position), texts, rebuild)
        stats.made[op.op] = stats.made.get(op.op, 0) + len(made)
        out += made
    return out, stats


def altered_copies(rows: list[Row], op: Eda | CharNoise, alter: Callable[[str, float, np.random.Generator], str],
                   key: tuple[int, int], texts: Callable[[Row], list[str]],
                   rebuild: Callable[[Row, list[str]], Row]) -> list[Row]:
    """`op.copies` altered copies of each row, copy by copy (every row's first copy, then every row's second)."""
    digests = row_digests([texts(row) for row in rows])
    made = []
    for copy in range(op.copies):
        for row, digest in zip(rows, digests):
            rng = np.random.default_rng([*key, copy, int(digest)])
            made.append(rebuild(row, [alter(text, op.rate, rng) for text in texts(row)]))
    return made


def row_digests(texts: list[list[str]]) -> np.ndarray:
    """XXH64 per row of its texts joined by the unit separator (so ["a b", "c"] and ["a", "b c"] differ)."""
    return xxh64(pl.Series([str.join("\x1f", parts) for parts in texts], dtype=pl.String))


def oversampled(rows: list[Row], target: float, label: Callable[[Row], str], key: tuple[int, int]) -> list[Row]:
    """Repeats of the smaller labels' rows up to ceil(target x the largest count) each; a seeded order per label,
    every row of the label once before any twice."""
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(label(row), []).append(row)
    goal = math.ceil(target * max(len(members) for members in by_label.values()) - 1e-9)
    made = []
    for name in sorted(by_label):
        members, need = by_label[name], goal - len(by_label[name])
        rng = np.random.default_rng([*key, int(row_digests([[name]])[0])])
        while need > 0:
            picked = rng.permutation(len(members))[:need]
            made += [members[i] for i in picked]
            need -= len(picked)
    return made


def label_counts(rows: Sequence[Row], label: Callable[[Row], str]) -> dict[str, int]:
    """Rows per label, for a log line that shows what oversampling balanced."""
    return dict(sorted(Counter(label(row) for row in rows).items()))


def _eda(text: str, rate: float, rng: np.random.Generator) -> str:
    """One of random deletion, swap or insertion of the text's own words."""
    words = text.split()
    if not words:
        return text
    changes = max(1, round(rate * len(words)))
    kind = int(rng.integers(3))
    if kind == 0:  # deletion: each word with probability `rate`, one always kept
        kept = rng.random(len(words)) >= rate
        if not kept.any():
            kept[int(rng.integers(len(words)))] = True
        words = [word for word, keep in zip(words, kept) if keep]
    elif kind == 1 and len(words) > 1:  # swap: two different positions each time
        for _ in range(changes):
            first = int(rng.integers(len(words)))
            second = (first + 1 + int(rng.integers(len(words) - 1))) % len(words)
            words[first], words[second] = words[second], words[first]
    elif kind == 2:  # insertion: a word of the text put at a random place
        for _ in range(changes):
            words.insert(int(rng.integers(len(words) + 1)), words[int(rng.integers(len(words)))])
    return " ".join(words)


def _char_noise(text: str, rate: float, rng: np.random.Generator) -> str:
    """Typos on letters and digits: swap with the next character, drop, insert a letter after, replace."""
    hit = rng.random(len(text)) < rate
    kinds = rng.integers(4, size=len(text))
    letters = rng.integers(len(LETTERS), size=len(text))
    out, i = [], 0
    while i < len(text):
        char = text[i]
        if not (hit[i] and char.isalnum()):
            out.append(char)
        elif kinds[i] == 0 and i + 1 < len(text):  # swap with the next character
            out += [text[i + 1], char]
            i += 1
        elif kinds[i] == 2:
            out += [char, LETTERS[letters[i]]]
        elif kinds[i] == 3:
            out.append(LETTERS[letters[i]])
        elif kinds[i] == 0:  # a swap at the very end has nothing to swap with
            out.append(char)
        i += 1  # kind 1 (drop) appends nothing
    return "".join(out)
