"""Augmentation of a fine-tuning dataset's train rows (`dataset.augment`): ops that make more labelled rows from the
ones given, run in order, each on the rows the ops before it produced (originals and earlier copies).

Validation and test rows are never augmented. Every op is deterministic in (the run's seed, the row): a row's
alterations depend on its own text, not on its position or the other rows.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from llmrecipe.recipe.base import Section

MAX_COPIES = 100
"""Copies one op may make of each row: far more than augmentation ever helps, so a larger number is a slip."""


class Eda(Section):
    """Easy data augmentation (Wei and Zou, 2019) with the text's own words: each copy gets one of random deletion
    (each word dropped with probability `rate`, one word always kept), random swap (two words exchanged, n times) or
    random insertion (a word of the text put at a random place, n times), chosen at random per copy, where n =
    max(1, round(rate x words)). Texts are split on whitespace and joined with single spaces."""

    op: Literal["eda"] = "eda"
    rate: float = Field(default=0.1, gt=0.0, le=0.5)
    """Share of a text's words deleted, swapped or inserted."""
    copies: int = Field(default=1, ge=1, le=MAX_COPIES)
    """Altered copies made of each row; the row itself stays."""


class CharNoise(Section):
    """Typos: each letter or digit of the text is, with probability `rate`, swapped with the next character,
    dropped, followed by an inserted random lower-case letter, or replaced by a random lower-case letter (one of
    the four, at random)."""

    op: Literal["char_noise"] = "char_noise"
    rate: float = Field(default=0.03, gt=0.0, le=0.5)
    """Probability that a letter or digit gets a typo."""
    copies: int = Field(default=1, ge=1, le=MAX_COPIES)
    """Noisy copies made of each row; the row itself stays."""


class Oversample(Section):
    """`classify` only: repeat rows of the smaller labels until each has `target` x the largest label's count (rounded
    up). The repeated rows are drawn without replacement, in a seeded order, before any row repeats twice."""

    op: Literal["oversample"] = "oversample"
    target: float = Field(default=1.0, gt=0.0, le=1.0)
    """Each label's row count after oversampling, as a share of the largest label's count (1.0: balanced)."""


AugmentOp = Annotated[Union[Eda, CharNoise, Oversample], Field(discriminator="op")]
"""One augmentation op, chosen by its `op` key."""
