"""Fitting an SFT conversation into `max_seq_len` tokens without losing what it teaches: the last assistant turn.

Cutting an over-long example at its end deletes the response, so a step can train on almost nothing while looking
healthy. Instead a conversation that does not fit loses its beginning: first whole earlier turns (the leading system
messages always stay), then the start of the prompt that leads to the last assistant turn, a token at a time. The
template renders the shortened conversation again, so its system and turn markers are always intact. A row whose
last assistant turn does not fit even after an empty prompt is dropped (so is every over-long row with
`truncation = "drop"`). `FitCounts` says what happened to the rows, for the step's metrics and its log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Literal

if TYPE_CHECKING:
    from tokenizers import Tokenizer

Messages = list[dict[str, str]]
Truncation = Literal["left", "drop"]


@dataclass
class FitCounts:
    """What fitting did to one split's rows."""

    intact: int = 0
    """Rows that fit as they are."""
    trimmed: int = 0
    """Rows that fit once earlier turns or the start of the prompt were removed; their last response is whole."""
    dropped: int = 0
    """Rows left out: longer than the limit with `truncation = "drop"`, or a response alone too long."""
    target_tokens: int = 0
    """Tokens in the loss (assistant tokens and end-of-turn tokens) over the kept rows."""

    @property
    def rows(self) -> int:
        return self.intact + self.trimmed + self.dropped

    def add(self, outcome: str, target_tokens: int) -> None:
        """One row fitted with `outcome` (`intact`, `trimmed` or `dropped`), keeping `target_tokens` in the loss."""
        setattr(self, outcome, getattr(self, outcome) + 1)
        self.target_tokens += target_tokens

    @property
    def kept(self) -> int:
        return self.intact + self.trimmed

    def as_metrics(self, prefix: str) -> dict[str, int]:
        return {f"{prefix}_rows_intact": self.intact, f"{prefix}_rows_prompt_trimmed": self.trimmed,
                f"{prefix}_rows_dropped": self.dropped, f"{prefix}_target_tokens": self.target_tokens}

    def sentence(self) -> str:
        return (f"{self.intact} intact, {self.trimmed} prompt-trimmed, {self.dropped} dropped of {self.rows} rows; "
                f"{self.target_tokens:,} target tokens")


def fit_messages(messages: Messages, length: Callable[[Messages], int], limit: int,
                 truncation: Truncation, tokenizer: Tokenizer) -> tuple[Messages | None, str]:
    """The conversation that fits in `limit` tokens as measured by `length`, and what was done: `intact`,
    `trimmed` or `dropped` (then None)."""
    if length(messages) <= limit:
        return messages, "intact"
    if truncation == "drop":
        return None, "dropped"
    system = 0
    while system < len(messages) and messages[system]["role"] == "system":
        system += 1
    head, body = messages[:system], messages[system:]
    last_answer = max(i for i, m in enumerate(body) if m["role"] == "assistant")
    starts = [i for i in range(1, last_answer) if body[i]["role"] == "user"]  # drop whole turns before these
    for start in starts:
        shorter = head + body[start:]
        if length(shorter) <= limit:
            return shorter, "trimmed"
    prompt = (starts[-1] if starts else 0)
    if body[prompt]["role"] != "user" or prompt >= last_answer:
        return None, "dropped"  # no prompt before the last answer to shorten
    trimmed = trim_prompt(head, body[prompt:], length, limit, tokenizer)
    return (trimmed, "trimmed") if trimmed is not None else (None, "dropped")


def trim_prompt(head: Messages, tail: Messages, length: Callable[[Messages], int], limit: int,
                tokenizer: Tokenizer) -> Messages | None:
    """`head + tail` with the fewest leading tokens cut from the first message of `tail` (a user turn) so that it
    fits, or None when it does not fit even with that message empty. A binary search over token boundaries."""
    content = tail[0]["content"]
    starts = [start for start, _ in tokenizer.encode(content, add_special_tokens=False).offsets] + [len(content)]

    def cut(k: int) -> Messages:
        return head + [{**tail[0], "content": content[starts[k]:].lstrip()}] + tail[1:]

    if length(cut(len(starts) - 1)) > limit:
        return None
    low, high = 0, len(starts) - 1  # cut(high) fits; cut(low) does not (the whole prompt was too long)
    while high - low > 1:
        middle = (low + high) // 2
        if length(cut(middle)) <= limit:
            high = middle
        else:
            low = middle
    return cut(high)
