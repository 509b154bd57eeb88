"""Token ids -> text, piece by piece, holding back what may still turn into a stop sequence.

Byte-level BPE can split one character over several tokens; until the rest arrives the decoder shows
U+FFFD, so text that may still change (see below) is held back too.

Only the tokens since the last boundary are decoded again at each token (not the whole output, which would make a
long completion quadratic). A boundary is where the text so far can no longer change: for byte-level BPE, ids
that decode without a trailing replacement character (their bytes end a character); for byte fallback (`<0xNN>`
tokens, whose whole run turns into replacement characters if it is not valid UTF-8), also not inside such a run.
"""

from __future__ import annotations

from typing import Any, Callable

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(
        self, decode: Callable[[list[int]], str], stop: tuple[str, ...], byte_ids: frozenset[int] = frozenset()
    ):
        self.decode = decode
        self.byte_ids = byte_ids
        """Byte-fallback tokens: a run of them may still change as it grows (see byte_fallback_ids)."""
        self.stop = tuple(s for s in stop if s)
        self.pending: list[int] = []
        """Ids since the last boundary, decoded again with each new token."""
        self.settled = 0
        """Characters of `text` decoded from the ids before `pending`."""
        self.text = ""
        self.emitted = 0
        """Characters of `text` already handed out."""
        self.stopped = False

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; returns (new text safe to show, whether a stop sequence ended the output)."""
        if self.stopped:  # the output ended at the first stop; later tokens add nothing
            return "", True
        self.pending.append(token_id)
        tail = self.decode(self.pending)
        self.text = self.text[: self.settled] + tail
        if not tail.endswith(REPLACEMENT) and token_id not in self.byte_ids:  # the next ids decode on their own
            self.pending, self.settled = [], len(self.text)
        hit = self._first_stop()
        if hit is not None:
            delta, self.emitted = self.text[self.emitted : hit], hit
            self.text, self.stopped = self.text[:hit], True
            return delta, True
        safe = len(self.text) - self._held_back()
        delta = self.text[self.emitted : max(safe, self.emitted)]
        self.emitted += len(delta)
        return delta, False

    def flush(self) -> str:
        """The rest of the text, once the output has ended for another reason than a stop sequence."""
        delta, self.emitted = self.text[self.emitted :], len(self.text)
        return delta

    def _first_stop(self) -> int | None:
        # A stop can only be completed by the newest characters: search from just before the unsent text.
        start = max(0, self.emitted - max((len(s) for s in self.stop), default=0))
        found = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(found) if found else None

    def _held_back(self) -> int:
        """Length of the text's tail that may still change (decoded from the ids after the last boundary: a partial
        character, a run of byte tokens) or is the start of a stop sequence."""
        unsettled = len(self.text) - self.settled if self.pending else 0
        text = self.text[: len(self.text) - unsettled]
        prefix = max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        return unsettled + prefix


def byte_fallback_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of a tokenizer's byte-fallback tokens (`<0x41>`): the decoder reads a run of them as one byte string."""
    from llmrecipe.tokenizer.bytes import BYTE_TOKEN

    return frozenset(i for token, i in tokenizer.get_vocab().items() if BYTE_TOKEN.fullmatch(token))
