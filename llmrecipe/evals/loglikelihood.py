"""log P(continuation | context) under a causal decoder, with lm-evaluation-harness's semantics.

As in the harness (`_encode_pair`, `_loglikelihood_tokens`): whitespace at the end of the context moves to
the start of the continuation; the continuation's tokens are those of `encode(context + continuation)`
past the tokens of `encode(context)`; an empty context is replaced by the end-of-text token; a request
longer than the model's context keeps its last seq_len + 1 tokens. Requests are scored longest first in
batches padded on the right: a causal model never looks right, so padding does not change any score and
results do not depend on the batch size.
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
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of log-probabilities of each continuation and whether it is the greedy continuation, in request order."""
    seq_len = model.shape.seq_len
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].context_ids + requests[i].continuation_ids))
    log_likelihoods = np.zeros(len(requests), dtype=np.float64)
    greedy = np.zeros(len(requests), dtype=bool)
    for first in range(0, len(order), batch_size):
        batch = order[first : first + batch_size]
        scores = score_batch(model, [requests[i] for i in batch], seq_len, device)
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
    results = []
    for i, (start, stop, targets) in enumerate(spans):
        log_probs = torch.log_softmax(logits[i, start:stop], dim=-1)  # (S, V): predictions of the continuation
        wanted = torch.tensor(targets, dtype=torch.long, device=log_probs.device)  # (S,)
        total = log_probs.gather(1, wanted[:, None]).double().sum().item()
        results.append((total, bool((log_probs.argmax(dim=-1) == wanted).all())))
    return results
