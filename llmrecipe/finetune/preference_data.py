"""Preference pairs: rows -> (prompt, chosen, rejected) conversations -> token ids with a loss mask on each response.

A row holds one pair: a prompt (a user turn, or a list of messages) and two answers to it (strings, or lists of
assistant messages); or, without a prompt, two whole conversations that differ only in their last assistant turn.
Both answers are rendered after the same prompt with the step's chat template, as `sft` renders a conversation
(llmrecipe/finetune/chat_data.py), and only the answers' tokens (with the end-of-turn token) count. A pair that does
not fit `max_seq_len` loses the start of its prompt until its longer answer fits, so both answers always follow the
same prompt (llmrecipe/finetune/fit.py).

Rows come from a source named by `dataset.format`; `pairs_from_rows` turns any source's rows into pairs, so a new
format is one more entry in `ROW_SOURCES`. `PairCounts` says how many pairs were built and why rows were left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from itertools import islice
from typing import TYPE_CHECKING, Any, Callable

from llmrecipe.errors import StepError
from llmrecipe.finetune.chat_data import (Example, assistant_spans, checked_messages, encode_example, in_held_out_share,
                                          row_split, split_rows)
from llmrecipe.finetune.feedback_pairs import read_feedback_pairs, require_pairs
from llmrecipe.finetune.fit import FitCounts, Truncation, fit_messages
from llmrecipe.jsonl import json_objects
from llmrecipe.recipe.finetune import DatasetConfig

if TYPE_CHECKING:  # `validate` checks rows with this module, without loading the tokenizer library
    from tokenizers import Tokenizer

Messages = list[dict[str, str]]
Rows = list[tuple[int, dict[str, Any]]]
"""(line number, row) of a source, in its order."""


@dataclass(frozen=True)
class Pair:
    prompt: Messages
    """The conversation both answers follow."""
    chosen: Messages
    """The preferred answer: one or more assistant turns."""
    rejected: Messages


@dataclass
class EncodedPair:
    chosen: Example
    """Prompt and chosen answer as token ids; the answer's tokens are the targets."""
    rejected: Example


@dataclass
class SourceRows:
    rows: Rows
    skipped: dict[str, int] = field(default_factory=dict)
    """Rows the source read but could not make a pair of, by reason (for the step's report)."""
    built: dict[str, int] = field(default_factory=dict)
    """Pairs the source made, by the rule that made them, when it has rules (`serve_log`: correction, rating)."""


@dataclass
class PairCounts:
    """What became of the rows: per split what fitting did (a dropped pair did not fit `max_seq_len`), and the
    rows the source left out, by reason."""

    splits: dict[str, FitCounts]
    skipped: dict[str, int]
    built: dict[str, int] = field(default_factory=dict)
    """The source's pairs by rule (see SourceRows.built)."""

    def as_metrics(self) -> dict[str, int]:
        metrics = {f"{split}_pairs": counts.kept for split, counts in self.splits.items() if split != "test"}
        for split in ("train", "val"):
            metrics.update(self.splits[split].as_metrics(split))
        return {**metrics, **{f"pairs_by_{rule}": count for rule, count in self.built.items()},
                **{f"rows_skipped_{reason}": count for reason, count in self.skipped.items()}}

    def sentence(self) -> str:
        train, val = self.splits["train"], self.splits["val"]
        skipped = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in self.skipped.items())
        built = ", ".join(f"{count} by {rule}" for rule, count in self.built.items())
        return (f"built {train.kept} train and {val.kept} validation pairs (train: {train.sentence()}; validation: "
                f"{val.sentence()}); dropped rows did not fit max_seq_len"
                + (f"; the source's pairs: {built}" if built else "")
                + (f"; rows skipped by the source: {skipped}" if skipped else ""))


def jsonl_rows(path: Path, dataset: DatasetConfig, limit: int | None = None) -> SourceRows:
    """`format = "pairs"`: every line of the JSONL file is one pair (the first `limit` lines: a sample)."""
    return SourceRows(list(islice(json_objects(path), limit)))


def serve_log_rows(path: Path, dataset: DatasetConfig, limit: int | None = None) -> SourceRows:
    """`format = "serve_log"`: the pairs people's ratings and corrections make of a serve log (the first `limit`:
    a sample). The whole log is read either way: an answer and its feedback can be far apart. A pair is numbered by
    its position among the pairs, not by a log line: one answer can be in several pairs (corrected, and rated
    against another answer), and rows are told apart by their numbers."""
    pairs = read_feedback_pairs(path).conversations_only()
    require_pairs(pairs, path.name)
    rows = [(number, {dataset.prompt_field: pair["prompt"], dataset.chosen_field: pair["chosen"],
                      dataset.rejected_field: pair["rejected"]})
            for number, pair in enumerate(pairs.rows[:limit], start=1)]
    return SourceRows(rows, dict(pairs.skipped), dict(pairs.built))


ROW_SOURCES: dict[str, Callable[[Path, DatasetConfig, int | None], SourceRows]] = {
    "pairs": jsonl_rows, "serve_log": serve_log_rows}
"""`dataset.format` -> the function that reads its file as rows of pairs, `(path, dataset, limit)`; `limit` bounds
what it reads (for the sample `validate` checks), None reads it all."""


def pair_of(row: dict[str, Any], dataset: DatasetConfig, where: str, key: str = "dataset") -> Pair:
    """A row as a Pair, or an error naming the line, the field and the recipe setting that fixes it (`key`: where
    the dataset table is, e.g. `steps.prefs.dataset`)."""
    chosen_key, rejected_key, prompt_key = dataset.chosen_field, dataset.rejected_field, dataset.prompt_field
    missing = [f for f in (chosen_key, rejected_key) if f not in row]
    if missing:
        hint = (f" With '{dataset.response_field}' it looks like an SFT file: a preference step needs a chosen and a "
                "rejected answer per prompt." if dataset.response_field in row else "")
        raise StepError(f"{where}: no field {' or '.join(repr(f) for f in missing)}; the row has {sorted(row)}. Set "
                        f"{key}.chosen_field / {key}.rejected_field (and {key}.prompt_field) to the names the data "
                        f"uses.{hint}")
    if prompt_key in row:
        prompt = row[prompt_key]
        prompt = ([{"role": "user", "content": prompt}] if isinstance(prompt, str)
                  else checked_messages(prompt, prompt_key, where))
        chosen, rejected = (answer(row[f], f, where) for f in (chosen_key, rejected_key))
    else:
        prompt, chosen, rejected = split_conversations(row[chosen_key], row[rejected_key], dataset, where, key)
    if chosen == rejected:
        raise StepError(f"{where}: `{chosen_key}` and `{rejected_key}` are the same answer, so the pair teaches "
                        "nothing; remove the row or give it a different rejected answer")
    return Pair(prompt, chosen, rejected)


def answer(value: Any, name: str, where: str) -> Messages:
    """An answer: a string (one assistant turn) or a non-empty list of assistant messages."""
    if isinstance(value, str):
        return [{"role": "assistant", "content": value}]
    messages = checked_messages(value, name, where)
    if not messages or any(m["role"] != "assistant" for m in messages):
        raise StepError(f"{where}: `{name}` must be a string or a list of assistant messages (the prompt goes in "
                        "its own field)")
    return messages


def split_conversations(chosen: Any, rejected: Any, dataset: DatasetConfig, where: str,
                        key: str) -> tuple[Messages, Messages, Messages]:
    """Two whole conversations -> (their shared prompt, the chosen last turn, the rejected last turn)."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise StepError(f"{where}: no field '{dataset.prompt_field}'; with string answers the prompt must be given. "
                        f"Set {key}.prompt_field to the name the data uses, or give `{dataset.chosen_field}` and "
                        f"`{dataset.rejected_field}` as whole conversations")
    chosen = checked_messages(chosen, dataset.chosen_field, where)
    rejected = checked_messages(rejected, dataset.rejected_field, where)
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        raise StepError(f"{where}: whole conversations in `{dataset.chosen_field}` and `{dataset.rejected_field}` "
                        "must each end with the assistant turn being compared")
    if chosen[:-1] != rejected[:-1]:
        raise StepError(f"{where}: the conversations in `{dataset.chosen_field}` and `{dataset.rejected_field}` "
                        "differ before their last turn; a pair compares two answers to one prompt (or give the "
                        f"prompt in '{dataset.prompt_field}')")
    return chosen[:-1], chosen[-1:], rejected[-1:]


def first_user_turn(pair: Pair) -> str:
    """What held-out pairs are chosen by, as for `sft`: pairs repeating a prompt stay on one side."""
    users = [m["content"] for m in pair.prompt if m["role"] == "user"]
    return users[0] if users else "".join(m["content"] for m in pair.prompt)


def held_out(pair: Pair, dataset: DatasetConfig) -> bool:
    """Whether a pair without a split field is held out for validation: by a digest of its first user turn."""
    return in_held_out_share(first_user_turn(pair), dataset.val_fraction)


def pairs_from_rows(source: SourceRows, dataset: DatasetConfig, tokenizer: Tokenizer, template: str,
                    end_of_turn: str, limit: int, truncation: Truncation, file: str,
                    key: str = "dataset") -> tuple[dict[str, list[EncodedPair]], PairCounts]:
    """Every row checked, split (by the split field, else a stable share of prompts held out), fitted into `limit`
    tokens and encoded, before any training starts."""
    parsed = {number: pair_of(row, dataset, f"{file} line {number}", key) for number, row in source.rows}
    if len(parsed) != len(source.rows):  # a row source's bug, not the user's: one pair would silently replace another
        raise ValueError(f"{file}: the row source numbered two rows alike; each row needs its own number")

    splits = split_rows(source.rows, dataset, file, lambda row: held_out(pair_of(row, dataset, file, key), dataset))
    encoded: dict[str, list[EncodedPair]] = {}
    counts: dict[str, FitCounts] = {}
    for split, rows in splits.items():
        encoded[split], counts[split] = [], FitCounts()
        for number, _ in rows:
            pair, outcome = encode_pair(parsed[number], tokenizer, template, end_of_turn, limit, truncation,
                                        f"{file} line {number}")
            counts[split].add(outcome, sum(pair.chosen.targets[1:]) + sum(pair.rejected.targets[1:]) if pair else 0)
            if pair is not None:
                encoded[split].append(pair)
    return encoded, PairCounts(counts, dict(source.skipped), dict(source.built))


def encode_pair(pair: Pair, tokenizer: Tokenizer, template: str, end_of_turn: str, limit: int,
                truncation: Truncation, where: str) -> tuple[EncodedPair | None, str]:
    """Both answers after the pair's prompt, fitted as one (the prompt is cut until the longer answer fits); with
    what fitting did (`intact`, `trimmed`, `dropped`: then None)."""
    answered = len(pair.chosen)

    def encoded(prompt: Messages) -> EncodedPair:
        return EncodedPair(*(answer_example(tokenizer, template, end_of_turn, prompt, reply, where)
                             for reply in (pair.chosen, pair.rejected)))

    def longest(turns: Messages) -> int:
        both = encoded(turns[:-answered])
        return max(len(both.chosen.ids), len(both.rejected.ids))

    whole = encoded(pair.prompt)
    if max(len(whole.chosen.ids), len(whole.rejected.ids)) <= limit:
        return whole, "intact"  # most pairs: encoded once
    fitted, outcome = fit_messages(pair.prompt + pair.chosen, longest, limit, truncation, tokenizer)
    return (encoded(fitted[:-answered]) if fitted is not None else None), outcome


def answer_example(tokenizer: Tokenizer, template: str, end_of_turn: str, prompt: Messages, reply: Messages,
                   where: str) -> Example:
    """The prompt and one answer as token ids, with only the answer's assistant tokens as targets."""
    text, spans = assistant_spans(template, prompt + reply, end_of_turn, where)
    in_prompt = sum(m["role"] == "assistant" for m in prompt)  # earlier assistant turns are context, not targets
    return encode_example(tokenizer, text, spans[in_prompt:])


def load_pairs(path: Path, dataset: DatasetConfig, tokenizer: Tokenizer, template: str, end_of_turn: str, limit: int,
               truncation: Truncation, key: str = "dataset") -> tuple[dict[str, list[EncodedPair]], PairCounts]:
    """The dataset's pairs, per split; a file with no pair to train on is an error that says why."""
    source = ROW_SOURCES[dataset.format](path, dataset, None)
    check_usable(source, path.name, dataset)
    pairs, counts = pairs_from_rows(source, dataset, tokenizer, template, end_of_turn, limit, truncation, path.name,
                                    key)
    if not pairs["train"]:
        train = counts.splits["train"]
        reason = (f"all {train.rows} train rows are longer than max_seq_len = {limit - 1} tokens even with their "
                  "prompt cut; raise max_seq_len or shorten the answers" if train.rows else
                  f"no train rows ({counts.splits['val'].rows} validation, {counts.splits['test'].rows} test); "
                  f"check {key}.split_field and {key}.val_fraction")
        raise StepError(f"{path.name}: no usable preference pairs: {reason}")
    return pairs, counts


def check_usable(source: SourceRows, file: str, dataset: DatasetConfig) -> None:
    """A source that gave no rows: empty, or every row skipped (the reasons say which)."""
    if source.rows:
        return
    if not source.skipped:
        raise StepError(f"{file} has no rows: the file is empty (or only blank lines)")
    reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in source.skipped.items())
    raise StepError(f"{file}: no usable preference pairs (dataset.format = '{dataset.format}'): every row was "
                    f"skipped ({reasons})")


def check_sample(path: Path, dataset: DatasetConfig, rows: int, key: str) -> None:
    """What `validate` checks on the source's first `rows` rows: there are rows, each makes a pair, and its split
    field names a split."""
    source = ROW_SOURCES[dataset.format](path, dataset, rows)
    check_usable(source, path.name, dataset)
    for number, row in source.rows:
        pair_of(row, dataset, f"{path.name} line {number}", key)
        row_split(row, dataset, path.name, number)
