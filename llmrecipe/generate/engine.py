"""Batched autoregressive decoding with a KV cache: each new token costs one forward pass of one position.

Prompts of different lengths share a batch (left-padded, see cache.py); each row has its own sampling
settings, seed and stop rules, and leaves the batch the moment it finishes or its caller gives up, so
the rest decode at the smaller batch size.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from llmrecipe.generate.cache import left_pad
from llmrecipe.generate.sampling import SamplingParams, next_token
from llmrecipe.generate.text import TextStream, byte_fallback_ids

NOTHING_SEEN = torch.empty(0, dtype=torch.long)
"""The ids a row has seen, as far as sampling cares without a repetition penalty."""


@dataclass
class Delta:
    """What one decoding step added to one prompt's output."""

    index: int
    """Position of the prompt in the list given to `stream`."""
    token_id: int
    text: str
    """New text safe to show (possibly empty while a character or a stop sequence is incomplete)."""
    finish_reason: str | None = None
    """None while going on; `stop` (end-of-text token or stop sequence) or `length` on the last delta."""


@dataclass
class Completion:
    token_ids: list[int]
    text: str
    finish_reason: str
    prompt_tokens: int


@dataclass
class _Row:
    index: int
    prompt: list[int]
    params: SamplingParams
    generator: torch.Generator
    text: TextStream | None
    output: list[int] = field(default_factory=list)


class Engine:
    """Decodes token ids with a decoder from decoders.py; with a tokenizer it also yields text and honours stops."""

    def __init__(self, decoder: Any, tokenizer: Any = None, eot_id: int | None = None, vocab_size: int | None = None):
        self.decoder = decoder
        self.tokenizer = tokenizer
        self.eot_id = eot_id
        self.vocab_size = vocab_size or decoder.vocab_size
        """Ids past the tokenizer's vocabulary are padding rows of the model: never sampled."""
        self.context = decoder.seq_len
        self.prompt_in_context = getattr(decoder, "prompt_in_context", True)
        """A decoder-only model continues its prompt in one context; an encoder-decoder reads the prompt in its
        encoder, so the prompt takes none of the output's room."""
        self.byte_ids = byte_fallback_ids(tokenizer) if tokenizer is not None else frozenset()

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def check_prompt(self, prompt: Sequence[int]) -> None:
        if not prompt:
            raise ValueError("the prompt is empty: give at least one token")
        if len(prompt) > self.context:
            raise ValueError(f"the prompt has {len(prompt)} tokens, more than the model's context of {self.context}")

    def generate(self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]) -> list[Completion]:
        ids: list[list[int]] = [[] for _ in prompts]
        texts, reasons = [""] * len(prompts), [""] * len(prompts)
        for delta in self.stream(prompts, params):
            ids[delta.index].append(delta.token_id)
            texts[delta.index] += delta.text
            reasons[delta.index] = delta.finish_reason or ""
        return [Completion(i, t, r, len(p)) for i, t, r, p in zip(ids, texts, reasons, prompts)]

    def stream(
        self,
        prompts: list[list[int]],
        params: SamplingParams | list[SamplingParams],
        cancelled: Callable[[int], bool] | None = None,
    ) -> Iterator[Delta]:
        """Yield one Delta per row per step, each row's last with its finish_reason.

        `cancelled(index)` is asked once per step; a row whose caller has gone is dropped without a last delta.
        The bookkeeping between forward passes is numpy: at batch 1 a torch call per index or small tensor
        costs a visible share of a step, a numpy one a tenth of it.
        """
        settings = params if isinstance(params, list) else [params] * len(prompts)
        for prompt in prompts:
            self.check_prompt(prompt)
        rows = [self._row(i, list(p), s) for i, (p, s) in enumerate(zip(prompts, settings))]
        ids, valid, positions = left_pad(prompts)  # (B, T) each
        used = ids.shape[1]
        # Every step after the prompt adds one cache slot per row, up to the longest budget (its last token is
        # never fed back); a short prompt's row may outlive the long ones, so this can pass the context.
        slots = used + max(self._budget(row) for row in rows) - 1
        filled = np.zeros((len(rows), slots), dtype=bool)  # (B, S) cache slots holding real tokens
        filled[:, :used] = valid
        logits, past = self.decoder.forward(ids, positions, valid, self.decoder.empty(len(rows), slots))  # (B, V)
        while rows:
            scores = logits[:, : self.vocab_size]  # (B, V) of the tokenizer's vocabulary
            keep = []
            for slot, row in enumerate(rows):
                delta = self._advance(row, scores[slot])
                yield delta
                if delta.finish_reason is None and not (cancelled and cancelled(row.index)):
                    keep.append(slot)
            if not keep:
                return
            if len(keep) < len(rows):
                past = self.decoder.select(past, np.array(keep))
                rows, filled = [rows[i] for i in keep], filled[keep]
            ids = np.array([[row.output[-1]] for row in rows], dtype=np.int64)  # (B, 1)
            positions = np.array([[len(row.prompt) + len(row.output) - 1] for row in rows], dtype=np.int64)  # (B, 1)
            filled[:, used] = True
            used += 1
            logits, past = self.decoder.forward(ids, positions, filled[:, :used], past)

    def _row(self, index: int, prompt: list[int], params: SamplingParams) -> _Row:
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        text = TextStream(self.decode, params.stop, self.byte_ids) if self.tokenizer is not None else None
        return _Row(index, prompt, params, torch.Generator().manual_seed(seed), text)

    def _budget(self, row: _Row) -> int:
        """New tokens the row may produce: its max_tokens, cut by the context (always at least one)."""
        return max(1, min(row.params.max_tokens, self.context - self._used(row.prompt)))

    def _used(self, prompt: list[int]) -> int:
        """Context positions the prompt takes from the output."""
        return len(prompt) if self.prompt_in_context else 0

    def _advance(self, row: _Row, logits: np.ndarray) -> Delta:
        """Pick the row's next token and say what it adds and whether the row is done."""
        seen = torch.tensor(row.prompt + row.output) if row.params.repetition_penalty != 1.0 else NOTHING_SEEN
        token = next_token(logits, row.params, seen, row.generator)
        row.output.append(token)
        if token == self.eot_id:
            return Delta(row.index, token, row.text.flush() if row.text else "", "stop")
        text, stopped = row.text.push(token) if row.text else ("", False)
        if stopped:
            return Delta(row.index, token, text, "stop")
        if len(row.output) >= row.params.max_tokens or self._used(row.prompt) + len(row.output) >= self.context:
            return Delta(row.index, token, text + (row.text.flush() if row.text else ""), "length")
        return Delta(row.index, token, text)
