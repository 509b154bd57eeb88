"""The training loss: summed next-token cross-entropy in fp32 from logits of any precision (training/loss.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmrecipe.training import loss
from llmrecipe.training.loss import IGNORE


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_equals_cross_entropy_of_the_upcast_logits_in_value_and_gradient(monkeypatch, dtype):
    monkeypatch.setattr(loss, "CHUNK_ELEMENTS", 3 * 50)  # 3 rows a chunk: 11 rows end in a partial chunk
    torch.manual_seed(0)
    weights = (4 * torch.randn(11, 50)).to(dtype).requires_grad_()
    targets = torch.randint(0, 50, (11,))
    targets[[2, 9]] = IGNORE
    reference = F.cross_entropy(weights.float(), targets, ignore_index=IGNORE, reduction="sum")
    (expected,) = torch.autograd.grad(3.0 * reference, weights)
    logits = weights * 1  # (N, V): a model's output, which backward overwrites with its gradient
    ours = loss.cross_entropy_sum(logits, targets)
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, reference, rtol=1e-6)
    (grad,) = torch.autograd.grad(3.0 * ours, weights)
    assert grad.dtype == dtype
    assert torch.allclose(grad.float(), expected.float(), atol=1e-6 if dtype == torch.float32 else 1e-2)
    assert not grad[[2, 9]].any()  # ignored positions get no gradient


def test_takes_batched_logits_and_a_batch_without_targets():
    weights = torch.randn(2, 3, 5, requires_grad=True)
    targets = torch.full((2, 3), IGNORE)
    total = loss.cross_entropy_sum(weights * 1, targets)  # (B, T, V) logits
    total.backward()
    assert total.item() == 0.0 and not weights.grad.any()
