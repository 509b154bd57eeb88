"""Summed next-token cross-entropy, computed in fp32 from logits of any precision.

Under torch.compile (and on GPUs) it is `F.cross_entropy` of the upcast logits, which the compiler fuses into the
model's graph. In eager mode on a CPU, `F.cross_entropy(logits.float(), ...)` makes five passes over a (N, V) tensor
in memory: the fp32 copy, log_softmax's output, nll_loss's dense zero gradient, log_softmax's backward and the cast
of the gradient back to the logits' dtype. At a vocabulary of 8192 that was 15% of a bf16 LLaMA training step on a
2-core CPU. There the forward keeps only each row's log-sum-exp, and the backward writes softmax - one-hot over the
logits themselves, in their own dtype; both work through the rows in chunks small enough to stay in cache. On a GPU
that chunking would be thousands of tiny kernel launches per step, so GPUs never take it.
The arithmetic is the same (fp32 softmax of the upcast logits); only the order of the sums can differ.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100
"""Target id that the loss skips (`F.cross_entropy(ignore_index=...)`): positions that are not predicted."""

CHUNK_ELEMENTS = 1 << 18
"""Logits per chunk (1 MB in fp32): enough for the threads to share, small enough for a core's cache."""


def cross_entropy_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over positions of -log softmax(logits)[target], skipping targets equal to IGNORE; fp32 scalar.

    logits: (..., V) of any floating dtype, a model's output; targets: (...) token ids. In eager CPU mode the
    backward pass writes the logits' gradient over the logits: read anything else you need from them before calling
    backward.
    """
    logits, targets = logits.flatten(0, -2), targets.flatten()
    if logits.device.type != "cpu" or torch.compiler.is_compiling():
        return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    return _CrossEntropySum.apply(logits, targets)


def _row_chunks(rows: int, vocab: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // vocab)
    return [slice(start, start + step) for start in range(0, rows, step)]


class _CrossEntropySum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:  # (N, V), (N,)
        counted = targets != IGNORE  # (N,)
        targets = torch.where(counted, targets, 0)  # any valid index: ignored rows are zeroed below
        log_normalizer = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)  # (N,)
        for rows in _row_chunks(*logits.shape):
            log_normalizer[rows] = torch.logsumexp(logits[rows].float(), dim=-1)
        target_logits = logits.gather(1, targets[:, None]).squeeze(1).float()  # (N,)
        ctx.save_for_backward(logits, targets, counted, log_normalizer)
        return ((log_normalizer - target_logits) * counted).sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, targets, counted, log_normalizer = ctx.saved_tensors
        row_scale = grad.float() * counted  # (N,): d loss / d row loss, 0 where ignored
        # The gradient overwrites the logits: nothing reads them after the loss, and a fresh (N, V) buffer is
        # tens of MB that the allocator maps and the kernel zero-fills page by page on every step.
        upcast = logits.dtype != torch.float32  # fp32 logits are worked on in place; others through an fp32 chunk
        for rows in _row_chunks(*logits.shape):
            probs = logits[rows].float().sub_(log_normalizer[rows, None])  # (n, V)
            probs.exp_()  # softmax
            probs.scatter_add_(1, targets[rows, None], probs.new_full((probs.size(0), 1), -1.0))  # - one-hot
            probs.mul_(row_scale[rows, None])
            if upcast:
                logits[rows] = probs
        return logits, None
