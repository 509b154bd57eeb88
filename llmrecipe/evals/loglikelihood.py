"""log P(continuation | context) under a causal decoder, with lm-evaluation-harness's semantics.

As in the harness (`_encode_pair`, `_loglikelihood_tokens`): whitespace at the end of the context moves to
the start of the continuation; the continuation's tokens are those of `encode(context + continuation)`
past the tokens of `encode(context)`; an empty context is replaced by the end-of-text token; a request
longer than the model's context keeps its last seq_len + 1 tokens. Requests are scored longest first in
batches padded on the right: a causal model never looks right, so padding does not change any score and
results do not depend on the batch size.

An encoder-decoder reads the context in its encoder (padding masked) and scores the continuation with its decoder,
started from the end-of-text token as its seq2seq training starts it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch


@dataclass(frozen=True)
class Request:
    context_ids: list[int]
    continuation_ids: list[int]


def encode_pair(tokenizer: Any, context: str, continuation: str, eot_id: int) -> Request:
    """Token ids of a (context, continuation) pair, split where the harness splits them."""
    trailing = len(context) - len(context.rstrip())
    if trailing:
        context, continuation = context[:-trailing], context[-trailing:] + continuation
    if not context:
        return Request([eot_id], tokenizer.encode(continuation).ids)
    whole = tokenizer.encode(context + continuation).ids
    context_ids = tokenizer.encode(context).ids
    return Request(context_ids, whole[len(context_ids) :])


def cut_requests(requests: list[Request], seq_len: int) -> int:
    """How many requests are longer than the model's context, so lose the start of their context when scored."""
    return sum(len(r.context_ids) + len(r.continuation_ids) > seq_len + 1 for r in requests)


def score_requests(
    model: torch.nn.Module,
    requests: list[Request],
    batch_size: int,
    device: str = "cpu",
    on_batch: Callable[[int], None] = lambda scored: None,
    start_id: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log-probabilities of each continuation and whether it is the greedy continuation, in request order.
    `start_id` starts an encoder-decoder's decoder."""
    from llmrecipe.models.registry import family

    seq_len = model.shape.seq_len
    if family(model.shape.arch).encoder_decoder:
        def score(batch: list[Request]) -> list[tuple[float, bool]]:
            return score_batch_seq2seq(model, batch, seq_len, device, start_id)
    else:
        def score(batch: list[Request]) -> list[tuple[float, bool]]:
            return score_batch(model, batch, seq_len, device)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context_ids + requests[i].continuation_ids))
    log_likelihoods = np.zeros(len(requests), dtype=np.float64)
    greedy = np.zeros(len(requests), dtype=bool)
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        scores = score([requests[i] for i in batch])
        for index, (log_likelihood, is_greedy) in zip(batch, scores):
            log_likelihoods[index], greedy[index] = log_likelihood, is_greedy
        on_batch(len(batch))
    return log_likelihoods, greedy


@torch.no_grad()
def score_batch(model: torch.nn.Module, requests: list[Request], seq_len: int, device: str) -> list[tuple[float, bool]]:
    rows, spans = [], []
    for request in requests:
        ids = (request.context_ids + request.continuation_ids)[-(seq_len + 1) :]
        inputs = ids[:-1]
        scored = min(len(request.continuation_ids), len(inputs))  # continuation targets still in the window
        rows.append(inputs)
        spans.append((len(inputs) - scored, len(inputs), ids[len(ids) - scored :]))
    width = max(len(r) for r in rows)
    padded = torch.zeros((len(rows), width), dtype=torch.long)  # (B, T); padding on the right is never looked at
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    logits = model(padded.to(device)).float()  # (B, T, V), fp32
    return _continuation_scores(logits, spans)


@torch.no_grad()
def score_batch_seq2seq(model: torch.nn.Module, requests: list[Request], seq_len: int, device: str,
                        start_id: int) -> list[tuple[float, bool]]:
    """The context (its last seq_len tokens) to the encoder, the continuation scored by the decoder."""
    contexts = [r.context_ids[-seq_len:] for r in requests]
    width, length = max(len(c) for c in contexts), max(len(r.continuation_ids) for r in requests)
    inputs = torch.zeros((len(requests), width), dtype=torch.long)  # (B, S)
    start = model.shape.decoder_start(start_id)  # an imported T5's own, else the one given
    decoder_inputs = torch.full((len(requests), length), start, dtype=torch.long)  # (B, T)
    for i, (context, request) in enumerate(zip(contexts, requests)):
        inputs[i, : len(context)] = torch.tensor(context)
        decoder_inputs[i, 1 : len(request.continuation_ids)] = torch.tensor(request.continuation_ids[:-1])
    mask = torch.arange(width)[None, :] < torch.tensor([len(c) for c in contexts])[:, None]  # (B, S) real tokens
    logits = model(inputs.to(device), decoder_inputs.to(device), mask.to(device)).float()  # (B, T, V)
    return _continuation_scores(logits, [(0, len(r.continuation_ids), r.continuation_ids) for r in requests])


def _continuation_scores(logits: torch.Tensor, spans: list[tuple[int, int, list[int]]]) -> list[tuple[float, bool]]:
    """Per row: the summed log-probability of its targets at positions start:stop, and whether each is the argmax."""
    results = []
    for i, (start, stop, targets) in enumerate(spans):
        log_probs = torch.log_softmax(logits[i, start:stop], dim=-1)  # (S, V): predictions of the continuation
        wanted = torch.tensor(targets, dtype=torch.long, device=log_probs.device)  # (S,)
        total = log_probs.gather(1, wanted[:, None]).double().sum().item()
        results.append((total, bool((log_probs.argmax(dim=-1) == wanted).all())))
    return results
