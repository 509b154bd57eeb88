"""Held-out loss, perplexity and bits per byte of a token stream, and the unigram bar to beat.

The stream is cut into windows of seq_len + 1 tokens that start seq_len apart, so consecutive windows
share one token: the last target of a window is the first input of the next. Every token after the
first is a target exactly once, and the last, shorter window is scored too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class StreamScore:
    """Sums over every scored token; the per-token and per-byte figures are derived from them."""

    nats: float
    """Total negative log-likelihood of the scored tokens."""
    tokens: int
    byte_nats: float
    """Negative log-likelihood of the tokens that stand for at least one byte (special tokens stand for none)."""
    bytes: int
    """UTF-8 bytes the scored tokens stand for."""

    @property
    def loss(self) -> float:
        """Mean nats per token."""
        return self.nats / self.tokens

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_byte(self) -> float:
        """Comparable across tokenizers: the bits needed to encode the text, per UTF-8 byte."""
        return self.byte_nats / math.log(2) / self.bytes


def windows(tokens: np.ndarray, seq_len: int) -> list[tuple[int, int]]:
    """(start, stop) of each window of at most seq_len + 1 tokens; windows with fewer than 2 tokens predict nothing."""
    starts = range(0, max(len(tokens) - 1, 0), seq_len)
    return [(start, min(start + seq_len + 1, len(tokens))) for start in starts]


def score_stream(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    byte_lengths: np.ndarray,
    device: str = "cpu",
    on_batch: Callable[[int], None] = lambda scored: None,
) -> StreamScore:
    """Score every token of `tokens` (after the first) once, in fp32. `byte_lengths[id]` = bytes id stands for."""
    nats = target_nats(model, tokens, seq_len, batch_size, device, on_batch)  # (N - 1,)
    target_bytes = np.asarray(byte_lengths, dtype=np.int64)[np.asarray(tokens[1:], dtype=np.int64)]  # (N - 1,)
    return StreamScore(
        nats=float(nats.sum()),
        tokens=len(nats),
        byte_nats=float(nats[target_bytes > 0].sum()),
        bytes=int(target_bytes.sum()),
    )


def target_nats(
    model: torch.nn.Module,
    tokens: np.ndarray,
    seq_len: int,
    batch_size: int,
    device: str = "cpu",
    on_batch: Callable[[int], None] = lambda scored: None,
) -> np.ndarray:
    """Negative log-likelihood of each token after the first, (N - 1,) float64, scored in fp32.

    Full windows go in batches of `batch_size`; the shorter last window goes alone, so no padding is
    ever scored. `on_batch` receives the number of tokens each batch scored (for a progress bar).
    """
    spans = windows(tokens, seq_len)
    full = [span for span in spans if span[1] - span[0] == seq_len + 1]
    batches = [full[i : i + batch_size] for i in range(0, len(full), batch_size)]
    batches += [[span] for span in spans[len(full) :]]
    nats = np.zeros(max(len(tokens) - 1, 0), dtype=np.float64)
    for batch in batches:
        window_ids = np.stack([np.asarray(tokens[start:stop], dtype=np.int64) for start, stop in batch])
        scored = score_windows(model, torch.from_numpy(window_ids).to(device))  # (B, T)
        for (start, stop), row in zip(batch, scored):
            nats[start : stop - 1] = row  # window [start, stop) predicts targets start + 1 .. stop - 1
        on_batch(scored.size)
    return nats


@torch.no_grad()
def score_windows(model: torch.nn.Module, window_ids: torch.Tensor) -> np.ndarray:
    """Windows (B, T+1) -> nats of each target, (B, T) float64."""
    inputs, targets = window_ids[:, :-1], window_ids[:, 1:]  # (B, T) each
    logits = model(inputs).float()  # (B, T, V); fp32 even if the model was trained in bf16
    nats = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (B*T,)
    return nats.view(targets.shape).double().cpu().numpy()


@dataclass(frozen=True)
class DocumentScores:
    """Per document (the text up to and including its end-of-text token): sums a paired bootstrap resamples."""

    nats: np.ndarray
    tokens: np.ndarray
    byte_nats: np.ndarray
    bytes: np.ndarray
    first_token: np.ndarray
    """Offset of each document's first token in the stream."""


def document_scores(tokens: np.ndarray, nats: np.ndarray, byte_lengths: np.ndarray, eot_id: int) -> DocumentScores:
    """Attribute each target's nats to its document; a document's end-of-text token counts as its own.

    The first token of the stream is never a target, so its document is one token short of the others.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    is_eot = ids == eot_id
    document_of = np.concatenate([[0], np.cumsum(is_eot)[:-1]])  # (N,): eots seen before each position
    targets = document_of[1:]  # (N - 1,)
    count = int(document_of[-1]) + 1 if len(ids) else 0
    target_bytes = np.asarray(byte_lengths, dtype=np.int64)[ids[1:]].astype(np.float64)
    starts = np.concatenate([[0], np.flatnonzero(is_eot) + 1])[:count]
    return DocumentScores(
        nats=np.bincount(targets, weights=nats, minlength=count),
        tokens=np.bincount(targets, minlength=count).astype(np.float64),
        byte_nats=np.bincount(targets, weights=np.where(target_bytes > 0, nats, 0.0), minlength=count),
        bytes=np.bincount(targets, weights=target_bytes, minlength=count),
        first_token=starts,
    )


def unigram_baseline(train_tokens: np.ndarray, eval_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats per token) on `eval_tokens` of token frequencies counted on `train_tokens`.

    Add-one (Laplace) smoothing gives every id of the vocabulary a nonzero probability, so an id never
    seen in training costs log(N + V) nats instead of infinity. A model that does not beat this number
    has learned nothing about context.
    """
    counts = token_counts(train_tokens, vocab_size) + 1.0  # (V,)
    log_probs = np.log(counts) - np.log(counts.sum())  # (V,)
    return float(-log_probs[np.asarray(eval_tokens, dtype=np.int64)].mean())


def token_counts(tokens: np.ndarray, vocab_size: int, chunk: int = 1 << 24) -> np.ndarray:
    """How often each id occurs, (V,); counted in chunks so a memory-mapped split is never copied whole."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for start in range(0, len(tokens), chunk):
        counts += np.bincount(np.asarray(tokens[start : start + chunk], dtype=np.int64), minlength=vocab_size)
    return counts
