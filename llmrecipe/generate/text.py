"""Token ids -> text, piece by piece, holding back what may still turn into a stop sequence.

Byte-level BPE can split one character over several tokens; until the rest arrives the decoder shows
U+FFFD, so trailing replacement characters are held back too.
"""

from __future__ import annotations

from typing import Callable

REPLACEMENT = "\ufffd"


class TextStream:
    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...]):
        self.decode = decode
        self.stop = tuple(s for s in stop if s)
        self.ids: list[int] = []
        self.text = ""
        self.emitted = 0
        """Characters of `text` already handed out."""

    def push(self, token_id: int) -> tuple[str, bool]:
        """Add a token; returns (new text safe to show, whether a stop sequence ended the output)."""
        self.ids.append(token_id)
        self.text = self.decode(self.ids)
        hit = self._first_stop()
        if hit is not None:
            delta, self.emitted = self.text[self.emitted : hit], hit
            self.text = self.text[:hit]
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
        """Length of the text's tail that is a partial character or the start of a stop sequence."""
        text = self.text
        partial = len(text) - len(text.rstrip(REPLACEMENT))
        text = text[: len(text) - partial]
        prefix = max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
        return partial + prefix
