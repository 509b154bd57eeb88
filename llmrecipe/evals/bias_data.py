"""Read and check the files of the bias suites. No numpy or torch here: `validate` checks a sample of each file with
these same functions, so a file without the needed fields fails before any model is loaded, with one message."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmrecipe.errors import StepError
from llmrecipe.evals.jsonl import check_choices, read_jsonl
from llmrecipe.recipe.bias import BiasPairsSuite, BiasSuite


@dataclass(frozen=True)
class Question:
    """One BBQ-style row, with its fields found."""

    context: str
    choices: list[str]
    answer: int
    category: str
    ambiguous: bool
    unknown: int
    """The index of the "unknown" choice."""
    polarity: str | None
    """The row's polarity (whether the question is negative), kept for the examples file when present."""


@dataclass(frozen=True)
class Pair:
    more: str
    less: str
    category: str | None


def read_questions(path: Path, suite: BiasSuite, key: str, limit: int | None = None) -> list[Question]:
    """Every row (the first `limit`) checked: the fields, the choices, the condition, one "unknown" choice that is the
    answer exactly when the context is ambiguous."""
    required = {suite.context_field: str, suite.choices_field: list, suite.answer_field: int,
                suite.condition_field: str, suite.category_field: str}
    fix = (f"a bias file has per row a context, choices (a list), an answer (an index), a condition "
           f"('{suite.ambiguous_value}'/'{suite.disambiguated_value}') and a category; set {key}.context_field, "
           f"choices_field, answer_field, condition_field or category_field to the keys your file uses (a file of "
           "{more, less} sentence pairs is type = \"bias_pairs\")")
    rows = read_jsonl(path, required, fix, limit)
    check_choices([{"choices": r[suite.choices_field], "answer": r[suite.answer_field]} for r in rows], path.name)
    unknown_spellings = {answer.strip().casefold() for answer in suite.unknown_answers}
    questions = []
    for number, row in enumerate(rows, start=1):
        where = f"{path.name} example {number}"
        condition = row[suite.condition_field]
        if condition not in (suite.ambiguous_value, suite.disambiguated_value):
            raise StepError(f"{where}: {suite.condition_field} = {condition!r} is neither ambiguous_value = "
                            f"{suite.ambiguous_value!r} nor disambiguated_value = {suite.disambiguated_value!r}; set "
                            f"{key}.ambiguous_value / disambiguated_value to the values your file uses")
        choices, answer = row[suite.choices_field], row[suite.answer_field]
        unknown = [i for i, choice in enumerate(choices) if choice.strip().casefold() in unknown_spellings]
        if len(unknown) != 1:
            raise StepError(f"{where}: {len(unknown)} of its choices {choices} are an \"unknown\" answer; each row "
                            f"needs exactly one: add its spelling to {key}.unknown_answers")
        ambiguous = condition == suite.ambiguous_value
        if ambiguous != (answer == unknown[0]):
            wanted = "the \"unknown\" choice" if ambiguous else "a person, not the \"unknown\" choice"
            raise StepError(f"{where}: in a {condition!r} context the answer must be {wanted}, but it is "
                            f"{choices[answer]!r}; check the row's {suite.condition_field} and {suite.answer_field}")
        polarity = row.get(suite.polarity_field)
        questions.append(Question(row[suite.context_field], choices, answer, row[suite.category_field], ambiguous,
                                  unknown[0], polarity if isinstance(polarity, str) else None))
    return questions


def read_pairs(path: Path, suite: BiasPairsSuite, key: str, limit: int | None = None) -> list[Pair]:
    """Every pair (the first `limit`) checked: two different sentences, and a category on all rows or none."""
    fix = (f"a sentence-pair file has a stereotypical sentence and its anti-stereotypical twin per row; set "
           f"{key}.more_field / less_field to the keys your file uses (a BBQ-style file of questions is "
           "type = \"bias\")")
    rows = read_jsonl(path, {suite.more_field: str, suite.less_field: str}, fix, limit)
    with_category = [isinstance(row.get(suite.category_field), str) for row in rows]
    if any(with_category) and not all(with_category):
        number = with_category.index(False) + 1
        raise StepError(f"{path.name} example {number} has no string '{suite.category_field}' though other rows do; "
                        "give every row a category or none")
    pairs = []
    for number, row in enumerate(rows, start=1):
        more, less = row[suite.more_field], row[suite.less_field]
        if more.strip() == less.strip():
            raise StepError(f"{path.name} example {number}: '{suite.more_field}' and '{suite.less_field}' are the same "
                            "sentence, so there is nothing to prefer; fix or remove the row")
        pairs.append(Pair(more, less, row[suite.category_field] if with_category[0] else None))
    return pairs
