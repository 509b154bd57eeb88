"""The bias suites of the `evaluate` step: BBQ-style questions (`bias`) and stereotype sentence pairs (`bias_pairs`).

What these numbers can tell: how often a model, when a context does not say who did something, still names one of
the people instead of answering "unknown" (and whether it reads the answer correctly when the context does say);
and how often it finds a stereotypical sentence likelier than the same sentence about another group. What they
cannot tell: that a model is fair or safe. They cover the groups, templates and English phrasings of the data set
only; a low score on them does not carry over to other groups, languages, tasks or to what a model generates; the
pair scores depend on token counts and word frequencies as much as on stereotypes; and the BBQ numbers do not say
which group a model disfavours, only that it answers where it should abstain.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrecipe.recipe.base import Section

UNKNOWN_ANSWERS = ("Unknown", "Cannot be determined", "Can't be determined", "Not answerable", "Not known",
                   "Not enough info", "Not enough information", "Cannot answer", "Can't answer", "Undetermined")
"""The "unknown" options of BBQ (Parrish et al., 2022), as its files spell them."""


class BiasSuite(Section):
    """BBQ-style bias in question answering (Parrish et al., 2022): a context about two people, a question, and three
    choices: each person and an "unknown" option. In an ambiguous context nothing says who, so "unknown" is right;
    in a disambiguated one the context names the person. Choices are scored by log-likelihood as `multiple_choice`
    scores them. Reported overall and per category, with 95% bootstrap intervals: accuracy in ambiguous and in
    disambiguated contexts, their gap (disambiguated minus ambiguous) and how often the model picks a person over
    "unknown" in ambiguous contexts; a per-category chart goes to the report.

    These numbers show whether a model fills a gap in the context with an assumption about people. They do not say
    which group it assumes against (the file does not mark the stereotyped person), and they cover only the data
    set's categories and phrasings: a good score is not evidence that a model is unbiased elsewhere."""

    type: Literal["bias"]
    data: str
    """JSONL with a context (ending in the question), choices, the right answer and the row's condition and category
    per line (e.g. the shared BBQ-lite file); relative to the recipe."""
    context_field: str = "context"
    choices_field: str = "choices"
    """A list of strings: the two people and one of `unknown_answers`."""
    answer_field: str = "answer"
    """The 0-based index of the right choice."""
    condition_field: str = "condition"
    """Whether the context is ambiguous (`ambiguous_value`) or names the person (`disambiguated_value`)."""
    category_field: str = "category"
    """The kind of bias the row probes (age, gender identity, ...): each gets its own rows in the report."""
    polarity_field: str = "polarity"
    """Whether the question is negative or not (BBQ's `neg`/`nonneg`), copied into the examples file when a row
    has it."""
    ambiguous_value: str = "ambig"
    disambiguated_value: str = "disambig"
    unknown_answers: list[str] = Field(default=list(UNKNOWN_ANSWERS), min_length=1)
    """The spellings of the "unknown" choice (compared without case and surrounding spaces); each row needs exactly
    one choice among them."""
    delimiter: str = " "
    """Put between the context and each choice (the harness's `target_delimiter`)."""
    length_normalized: bool = False
    """Pick the choice with the highest log-likelihood per character (`multiple_choice`'s `accuracy_norm`) instead
    of the highest sum: the "unknown" spellings are longer than most names, which a sum penalizes."""
    limit: int | None = Field(default=None, ge=1)
    """Score only the first `limit` rows (all when unset)."""


class BiasPairsSuite(Section):
    """Stereotype preference on sentence pairs (CrowS-Pairs style, Nangia et al., 2020): each row holds a sentence
    that expresses a stereotype (`more`) and the same sentence about another group (`less`). Reported with 95%
    bootstrap intervals, overall and per category when rows have one: the share of pairs where the model gives the
    stereotypical sentence the higher log-likelihood (0.5 is no preference; below 0.5 prefers the
    anti-stereotypical one), and the mean log-likelihood difference (nats, more minus less).

    A sentence's log-likelihood is the sum over its tokens, so pairs whose group words differ in length or
    frequency lean one way whatever the model believes; the share is a property of these pairs and this model,
    not a measure of harm in what the model writes."""

    type: Literal["bias_pairs"]
    data: str
    """JSONL with two sentences per line; relative to the recipe."""
    more_field: str = "more"
    """The stereotypical sentence."""
    less_field: str = "less"
    """The same sentence about another group (anti-stereotypical)."""
    category_field: str = "category"
    """The kind of bias of the pair, when the rows have it (all rows or none): a per-category table and chart."""
    limit: int | None = Field(default=None, ge=1)
    """Score only the first `limit` rows (all when unset)."""
