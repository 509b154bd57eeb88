"""Preference pairs from the serve log: what people said about the server's answers, as (chosen, rejected) pairs.

`llmrecipe serve --log FILE` appends one JSON object a line: a `completion` line per answer (`id`, `prompt`,
`completion`, and for chat the `messages` it answered) and a `feedback` line per POST /v1/feedback
(`completion_id`, `rating` -1/0/1, `correction`). Two rules turn them into pairs:

- a completion with a correction gives (correction chosen, the completion rejected);
- two completions of one prompt rated differently give (the higher rated chosen, the lower rejected).

A chat completion's pair keeps its conversation as the prompt (a list of messages, rendered with the model's chat
template when trained); a plain completion's prompt is the text the model continued. When a completion has several
feedback lines, the latest rating and the latest correction count (people change their minds).

Nothing here fails on a line it cannot use: the log is machine-written and may end in a line cut short by a crash,
so every line left out is counted under a reason, and the step reports the counts. Only a log with no usable pair
at all is an error (`require_pairs`). Pure Python, no torch: `validate` runs it before any compute.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.finetune.chat_data import ROLES

CORRECTION, RATING = "correction", "rating"
"""The two rules, as counted in `FeedbackPairs.built`."""

# Why a line (or, for the rating and duplicate reasons, a completion or a pair) was left out; the step reports
# them as `rows_skipped_<reason>`, and messages show them with spaces.
UNREADABLE = "unreadable_line"
UNKNOWN_KIND = "neither_completion_nor_feedback"
BAD_COMPLETION = "completion_without_prompt_text_or_valid_messages"
BAD_FEEDBACK = "feedback_without_completion_id_or_valid_rating"
ORPHAN_FEEDBACK = "feedback_for_a_completion_not_in_the_log"
NO_FEEDBACK = "completion_without_feedback"
EMPTY_FEEDBACK = "feedback_without_rating_or_correction"
EMPTY_CORRECTION = "empty_correction"
SAME_CORRECTION = "correction_same_as_the_completion"
UNPAIRED_RATING = "rated_but_no_differently_rated_answer_to_the_prompt"
SAME_TEXT = "differently_rated_answers_with_the_same_text"
DUPLICATE = "pair_already_built"
PLAIN_PROMPT = "pair_of_plain_completions_not_chat"


@dataclass
class Completion:
    id: str
    line: int
    """Its line in the log (1-based), named in messages about the pair."""
    prompt: str | list[dict[str, str]]
    """The conversation (chat) or the text the model continued (completions)."""
    text: str
    rating: int | None = None
    correction: str | None = None
    feedback_lines: int = 0


@dataclass
class FeedbackPairs:
    rows: list[dict[str, Any]]
    """`{prompt, chosen, rejected, rule, completion_ids, line}`: `prompt` is a message list for chat, `line` the
    first log line of the completions the pair comes from; corrections first, then ratings, each in log order."""
    lines: int
    """Non-blank lines read."""
    built: Counter = field(default_factory=Counter)
    """Pairs built, by rule (`correction`, `rating`)."""
    skipped: Counter = field(default_factory=Counter)
    """Lines (or, for rating and duplicate reasons, completions and pairs) left out, by reason."""

    def conversations_only(self) -> "FeedbackPairs":
        """The pairs whose prompt is a conversation (chat completions); plain completions' pairs counted as skipped,
        for a task that renders prompts with a chat template (a plain prompt would be trained as a user turn it
        never was)."""
        kept = [row for row in self.rows if not isinstance(row["prompt"], str)]
        plain = Counter(row["rule"] for row in self.rows if isinstance(row["prompt"], str))
        skipped = self.skipped + Counter({PLAIN_PROMPT: sum(plain.values())})
        return FeedbackPairs(rows=kept, lines=self.lines, built=self.built - plain, skipped=skipped)

    def summary(self) -> str:
        """One line for the step's log: what was built, and why the rest was not used."""
        built = ", ".join(f"{count} by {rule}" for rule, count in sorted(self.built.items())) or "none"
        skipped = reasons(self.skipped) or "nothing skipped"
        return f"{len(self.rows)} pairs from {self.lines} serve-log lines ({built}); skipped: {skipped}"


def read_feedback_pairs(path: Path) -> FeedbackPairs:
    """Every pair the rules give from the serve log at `path`, with counts by rule and by reason skipped."""
    if not path.is_file():
        raise StepError(f"{path} does not exist; fix the path in the recipe (relative to the recipe file)")
    with open(path, encoding="utf-8") as log:
        return feedback_pairs(log)


def feedback_pairs(lines) -> FeedbackPairs:
    """The pairs of an iterable of serve-log lines (strings or already parsed objects)."""
    records = [(number, record) for number, line in enumerate(lines, start=1) if (record := parsed(line)) is not None]
    skipped: Counter = Counter()
    completions: dict[str, Completion] = {}
    # Completions first: the server learns an id before its line is written, so a quick client's feedback line can
    # come just before the completion it rates.
    for number, record in records:
        reason = take_completion(record, number, completions)
        if reason:
            skipped[reason] += 1
    for _, record in records:
        if isinstance(record, dict) and record.get("kind") == "feedback":
            reason = apply_feedback(record, completions)
            if reason:
                skipped[reason] += 1
    result = FeedbackPairs(rows=[], lines=len(records), skipped=skipped)
    seen: set[str] = set()
    candidates = [*correction_pairs(completions.values(), skipped), *rating_pairs(completions.values(), skipped)]
    for rule, pair, sources in candidates:
        key = json.dumps([pair["prompt"], pair["chosen"], pair["rejected"]], ensure_ascii=False)
        if key in seen:
            skipped[DUPLICATE] += 1
            continue
        seen.add(key)
        result.built[rule] += 1
        result.rows.append({**pair, "rule": rule, "completion_ids": [c.id for c in sources],
                            "line": min(c.line for c in sources)})
    skipped[NO_FEEDBACK] += sum(c.feedback_lines == 0 for c in completions.values())
    result.skipped = +skipped  # reasons that never happened are not reported as 0
    return result


def parsed(line: str | dict) -> dict | str | None:
    """The line's object; UNREADABLE for a line that is not one; None for a blank line."""
    if isinstance(line, dict):
        return line
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return UNREADABLE
    return record if isinstance(record, dict) else UNREADABLE


def take_completion(record: dict | str, number: int, completions: dict[str, Completion]) -> str | None:
    """Record a completion line; the reason when a line is neither usable completion nor feedback."""
    if isinstance(record, str):
        return record
    if record.get("kind") == "completion":
        completion = completion_of(record, number)
        if completion is None:
            return BAD_COMPLETION
        completions[completion.id] = completion
        return None
    return None if record.get("kind") == "feedback" else UNKNOWN_KIND


def completion_of(record: dict, number: int) -> Completion | None:
    prompt, text, identity = record.get("prompt"), record.get("completion"), record.get("id")
    if not (isinstance(prompt, str) and isinstance(text, str) and isinstance(identity, str)):
        return None
    messages = record.get("messages")
    if messages is not None:
        if not (isinstance(messages, list) and messages and all(map(is_message, messages))):
            return None
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages]
    return Completion(id=identity, line=number, prompt=prompt, text=text)


def is_message(value: Any) -> bool:
    return isinstance(value, dict) and value.get("role") in ROLES and isinstance(value.get("content"), str)


def apply_feedback(record: dict, completions: dict[str, Completion]) -> str | None:
    identity, rating, correction = record.get("completion_id"), record.get("rating"), record.get("correction")
    valid_rating = rating is None or (isinstance(rating, int) and not isinstance(rating, bool) and -1 <= rating <= 1)
    if not isinstance(identity, str) or not valid_rating or not (correction is None or isinstance(correction, str)):
        return BAD_FEEDBACK
    completion = completions.get(identity)
    if completion is None:
        return ORPHAN_FEEDBACK
    completion.feedback_lines += 1
    if rating is None and correction is None:
        return EMPTY_FEEDBACK
    if rating is not None:
        completion.rating = rating
    if correction is not None:
        completion.correction = correction
    return None


def correction_pairs(completions, skipped: Counter):
    """(rule, pair, its completion) for every corrected completion whose correction says something new."""
    for completion in completions:
        if completion.correction is None:
            continue
        if not completion.correction.strip():
            skipped[EMPTY_CORRECTION] += 1
        elif completion.correction == completion.text:
            skipped[SAME_CORRECTION] += 1
        else:
            pair = {"prompt": completion.prompt, "chosen": completion.correction, "rejected": completion.text}
            yield CORRECTION, pair, [completion]


def rating_pairs(completions, skipped: Counter):
    """(rule, pair, its two completions) for every two completions of one prompt rated differently, higher chosen.

    A rated completion that no other completion of its prompt out- or under-rates is counted as unpaired, unless
    its correction already made a pair of it."""
    by_prompt: dict[str, list[Completion]] = {}
    for completion in completions:
        if completion.rating is not None:
            by_prompt.setdefault(json.dumps(completion.prompt, ensure_ascii=False), []).append(completion)
    for rated in by_prompt.values():
        paired: set[str] = set()
        for better in rated:
            for worse in rated:
                if better.rating <= worse.rating:
                    continue
                paired.update((better.id, worse.id))
                if better.text == worse.text:
                    skipped[SAME_TEXT] += 1
                    continue
                pair = {"prompt": better.prompt, "chosen": better.text, "rejected": worse.text}
                yield RATING, pair, [better, worse]
        skipped[UNPAIRED_RATING] += sum(c.id not in paired and not corrected(c) for c in rated)


def corrected(completion: Completion) -> bool:
    return completion.correction is not None and bool(completion.correction.strip()) \
        and completion.correction != completion.text


def require_pairs(pairs: FeedbackPairs, file: str) -> None:
    """Stop with the fix when a serve log gives no pair at all."""
    if pairs.rows:
        return
    raise StepError(
        f"{file}: no usable preference pairs in this serve log ({pairs.lines} lines; "
        f"{reasons(pairs.skipped) or 'it is empty'}). Pairs come from "
        "completions that were corrected, or from two completions of one prompt rated differently: serve the model "
        "with `llmrecipe serve RECIPE STEP --log FILE`, rate (`rating` -1/0/1) or correct (`correction`) its answers "
        "with POST /v1/feedback, then point the step's dataset.path at that log"
    )



def reasons(skipped: Counter) -> str:
    """`3 completion without feedback; 1 empty correction`, most frequent first."""
    return "; ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in skipped.most_common())
