"""SFT examples: JSONL rows -> conversations -> token ids with a loss mask on the assistant's turns.

A row holds a prompt/response pair or a list of messages. It is rendered with the chat template, and the
assistant's tokens are found by rendering growing prefixes of the conversation: an assistant turn is the
text between the conversation up to it (with the generation prompt) and the conversation including it, up to
and including the end-of-turn token. Those tokens are the targets; the model also learns to stop.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmrecipe.errors import StepError
from llmrecipe.finetune.fit import FitCounts, Truncation, fit_messages
from llmrecipe.jsonl import json_objects
from llmrecipe.recipe.finetune import DatasetConfig

if TYPE_CHECKING:  # `validate` checks rows with this module, without loading the tokenizer library
    from tokenizers import Tokenizer

VAL_SPLITS = ("validation", "val")
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    ids: list[int]
    """Token ids of the rendered conversation."""
    targets: list[bool]
    """Per id: part of an assistant turn (its content and the end-of-turn token), so in the loss."""


def read_rows(path: Path, dataset: DatasetConfig) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """(line number, row) per split: `train`, `val`, `test` (by the split field, else a stable hash of the row)."""
    return split_rows(json_objects(path), dataset, path.name, lambda row: held_out(row, dataset))


def split_rows(rows: Iterable[tuple[int, dict[str, Any]]], dataset: DatasetConfig, file: str,
               hold_out: Callable[[dict[str, Any]], bool]) -> dict[str, list[tuple[int, dict[str, Any]]]]:
    """(line number, row) per split, by the split field; when no row is marked for validation, the train rows for
    which `hold_out` is true are."""
    splits: dict[str, list[tuple[int, dict[str, Any]]]] = {"train": [], "val": [], "test": []}
    for number, row in rows:
        splits[row_split(row, dataset, file, number)].append((number, row))
    if not splits["val"]:  # no validation rows given: hold out a hashed share of the train rows
        held = [hold_out(row) for _, row in splits["train"]]
        splits["val"] = [r for r, h in zip(splits["train"], held) if h]
        splits["train"] = [r for r, h in zip(splits["train"], held) if not h]
    return splits


def held_out(row: dict[str, Any], dataset: DatasetConfig) -> bool:
    """A stable choice by a digest of the row's prompt (its first user turn): the same on any machine and in any
    order, and rows that repeat a prompt with other responses stay on one side, so validation prompts are unseen."""
    prompt = row.get(dataset.prompt_field)
    if not isinstance(prompt, str):
        messages = row.get(dataset.messages_field)
        users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"] \
            if isinstance(messages, list) else []
        prompt = users[0] if users else json.dumps(row, sort_keys=True, ensure_ascii=False)
    return in_held_out_share(str(prompt), dataset.val_fraction)


def in_held_out_share(prompt: str, fraction: float) -> bool:
    """Whether a digest of the prompt falls in the held-out `fraction`: stable across machines, runs and row order."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def row_split(row: dict[str, Any], dataset: DatasetConfig, file: str, number: int) -> str:
    value = row.get(dataset.split_field)
    if value is None:
        return "train"
    if value in VAL_SPLITS:
        return "val"
    if isinstance(value, str) and value in ("train", "test"):
        return value
    raise StepError(f"{file} line {number}: {dataset.split_field} = {value!r}; use train, validation (or val) or test")


def conversation(row: dict[str, Any], dataset: DatasetConfig, file: str, number: int,
                 key: str = "dataset") -> list[dict[str, str]]:
    """A row as messages [{"role", "content"}] with at least one assistant turn; a mismatch names the line, the field
    and the recipe's setting (`key`: where the dataset table is, e.g. `steps.chat.dataset`)."""
    where = f"{file} line {number}"
    if dataset.messages_field in row:
        messages = checked_messages(row[dataset.messages_field], dataset.messages_field, where)
        if not any(m["role"] == "assistant" for m in messages):
            raise StepError(f"{where}: `{dataset.messages_field}` has no assistant turn, so nothing to learn; every "
                            "conversation needs at least one message with role \"assistant\"")
        return messages
    missing = [f for f in (dataset.prompt_field, dataset.response_field) if not isinstance(row.get(f), str)]
    if missing:
        labelled = dataset.text_field in row and dataset.label_field in row
        fix = (f"With '{dataset.text_field}' and '{dataset.label_field}' it looks like a classification file: an sft "
               "step learns prompt/response pairs or conversations; to learn labels use task = \"classify\"" if labelled
               else f"Set {key}.prompt_field / {key}.response_field (or {key}.messages_field) to the names the data uses")
        raise StepError(
            f"{where}: no string field {' or '.join(repr(f) for f in missing)} and no {dataset.messages_field!r} list; "
            f"the row has {sorted(row)}. {fix}"
        )
    return [{"role": "user", "content": row[dataset.prompt_field]},
            {"role": "assistant", "content": row[dataset.response_field]}]


def checked_messages(value: Any, field: str, where: str) -> list[dict[str, str]]:
    """`value` as a list of {"role", "content"} messages (extra keys dropped), or an error naming the field."""
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise StepError(f"{where}: `{field}` must be a list of {{\"role\", \"content\"}} objects")
    for m in value:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise StepError(f"{where}: every message needs a role ({', '.join(ROLES)}) and a string content; "
                            f"found {json.dumps(m)[:80]}")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def render(template: str, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """The same Jinja settings as generation (llmrecipe/generate/chat.py), so training and chat see one format."""
    try:
        return compiled(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token="", eos_token="")
    except TemplateError as error:
        raise StepError(f"the chat template failed: {error}; check the recipe's chat_template") from None


@functools.lru_cache(maxsize=8)
def compiled(template: str):
    """The template compiled once: a step renders it a few times per row (more when fitting long rows)."""
    try:
        return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(template)
    except TemplateError as error:
        raise StepError(f"the chat template failed: {error}; check the recipe's chat_template") from None


def assistant_spans(template: str, messages: list[dict[str, str]], end_of_turn: str, where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of each assistant turn, end-of-turn token included."""
    text = render(template, messages, add_generation_prompt=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render(template, messages[:index], add_generation_prompt=True)
        through = render(template, messages[: index + 1], add_generation_prompt=False)
        if not (text.startswith(through) and through.startswith(before)):
            raise StepError(f"{where}: the chat template renders a conversation's start differently once more turns "
                            "follow, so the assistant's tokens cannot be found; use a template that renders turn by turn")
        end = through.rfind(end_of_turn, len(before))  # the turn is the tail of `through`, however rendered
        if end < 0:
            raise StepError(f"the chat template does not put end_of_turn = {end_of_turn!r} after an assistant turn "
                            f"({where}); the model could never learn to stop. Fix the template or end_of_turn")
        spans.append((len(before), end + len(end_of_turn)))
    return text, spans


def encode_example(tokenizer: Tokenizer, text: str, spans: list[tuple[int, int]]) -> Example:
    """Token ids and their loss mask: a token is a target when it overlaps an assistant span."""
    encoding = tokenizer.encode(text, add_special_tokens=False)
    targets = [any(start < end_span and end > start_span for start_span, end_span in spans)
               for start, end in encoding.offsets]
    return Example(ids=list(encoding.ids), targets=targets)


def load_examples(path: Path, dataset: DatasetConfig, tokenizer: Tokenizer, template: str, end_of_turn: str,
                  limit: int | None = None, truncation: Truncation = "left",
                  key: str = "dataset") -> tuple[dict[str, list[Example]], dict[str, FitCounts]]:
    """Every row of the file checked, fitted into `limit` tokens (see llmrecipe/finetune/fit.py; None: no limit) and
    encoded, per split, before any training starts; with what fitting did to each split's rows."""
    return encode_conversations(conversations(path, dataset, key), path.name, tokenizer, template, end_of_turn, limit,
                                truncation)


Conversations = dict[str, list[tuple[int, list[dict[str, str]]]]]
"""Split -> (line number, messages) per row."""


def conversations(path: Path, dataset: DatasetConfig, key: str = "dataset") -> Conversations:
    """Every row of the file checked and read as messages, per split."""
    return {split: [(number, conversation(row, dataset, path.name, number, key)) for number, row in rows]
            for split, rows in read_rows(path, dataset).items()}


def user_turns(row: tuple[int, list[dict[str, str]]]) -> list[str]:
    """The texts of a conversation's user turns: what augmentation alters (the responses it learns stay intact)."""
    return [m["content"] for m in row[1] if m["role"] == "user"]


def with_user_turns(row: tuple[int, list[dict[str, str]]], texts: list[str]) -> tuple[int, list[dict[str, str]]]:
    """The conversation with its user turns' texts replaced, in order."""
    replacements = iter(texts)
    return row[0], [{**m, "content": next(replacements)} if m["role"] == "user" else m for m in row[1]]


def encode_conversations(splits: Conversations, file: str, tokenizer: Tokenizer, template: str, end_of_turn: str,
                         limit: int | None = None,
                         truncation: Truncation = "left") -> tuple[dict[str, list[Example]], dict[str, FitCounts]]:
    """The conversations fitted and encoded per split, with what fitting did to each split's rows."""
    encoded: dict[str, list[Example]] = {}
    counts: dict[str, FitCounts] = {}
    for split, rows in splits.items():
        encoded[split], counts[split] = [], FitCounts()
        for number, messages in rows:
            where = f"{file} line {number}"

            def example_of(turns: list[dict[str, str]]) -> Example:
                return encode_example(tokenizer, *assistant_spans(template, turns, end_of_turn, where))

            example, outcome = example_of(messages), "intact"
            if limit is not None and len(example.ids) > limit:
                fitted, outcome = fit_messages(messages, lambda turns: len(example_of(turns).ids), limit, truncation,
                                               tokenizer)
                example = example_of(fitted) if fitted is not None else None
            counts[split].add(outcome, sum(example.targets[1:]) if example else 0)  # the first is never predicted
            if example is not None:
                encoded[split].append(example)
    if not counts["train"].rows:
        if not any(c.rows for c in counts.values()):
            raise StepError(f"{file} has no rows: the file is empty (or only blank lines)")
        raise StepError(f"{file} has no train rows ({counts['val'].rows} validation, {counts['test'].rows} test); "
                        f"check dataset.split_field and dataset.val_fraction")
    return encoded, counts
