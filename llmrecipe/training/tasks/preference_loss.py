"""Preference losses on pairs of responses to one prompt: DPO, IPO and SimPO, as pure functions of log-probabilities.

Each takes the policy's log-probabilities of the chosen and rejected responses, (B,) each, and returns the per-pair
losses (B,) and the implicit rewards of both responses, (B,) each (the reward accuracy and margin are read from
them):
- DPO (Rafailov et al., 2023): -log sigmoid(beta * h), h = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r)), with
  log-probabilities summed over the response's tokens; rewards beta * (log pi - log ref).
- IPO (Azar et al., 2023): (h - 1 / (2 beta))^2 on the same summed h: a squared loss that pulls the margin to a
  target instead of pushing it without bound, so it does not overfit deterministic preferences; DPO's rewards.
- SimPO (Meng et al., 2024): -log sigmoid(beta * (avg log pi(c) - avg log pi(r)) - gamma), log-probabilities
  averaged over each response's tokens and no reference model; the target margin `gamma` is in reward units (the
  paper's gamma, not its gamma / beta ratio); rewards beta * avg log pi.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

Method = Literal["dpo", "ipo", "simpo"]
USES_REFERENCE: dict[str, bool] = {"dpo": True, "ipo": True, "simpo": False}
"""Whether a method compares the policy with the starting model (whose log-probabilities are computed once)."""


@dataclass(frozen=True)
class PairLosses:
    losses: torch.Tensor  # (B,)
    chosen_rewards: torch.Tensor  # (B,)
    rejected_rewards: torch.Tensor  # (B,)


def dpo(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
        beta: float) -> PairLosses:
    """Summed log-probabilities (B,) of the policy and the reference."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected  # (B,) each
    losses = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
    return PairLosses(losses, beta * chosen_ratio, beta * rejected_ratio)


def ipo(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor,
        beta: float) -> PairLosses:
    """Summed log-probabilities (B,) of the policy and the reference."""
    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected  # (B,) each
    losses = (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2
    return PairLosses(losses, beta * chosen_ratio, beta * rejected_ratio)


def simpo(chosen_mean: torch.Tensor, rejected_mean: torch.Tensor, beta: float, gamma: float) -> PairLosses:
    """Per-token mean log-probabilities (B,) of the policy."""
    chosen_rewards, rejected_rewards = beta * chosen_mean, beta * rejected_mean
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)
    return PairLosses(losses, chosen_rewards, rejected_rewards)


def pair_losses(method: Method, logps: torch.Tensor, reference: torch.Tensor, lengths: torch.Tensor, beta: float,
                gamma: float) -> PairLosses:
    """`logps` (B, 2): summed log-probabilities of (chosen, rejected); `reference` (B, 2) the same under the
    reference (unused by SimPO); `lengths` (B, 2) the responses' token counts (used by SimPO only)."""
    if method == "simpo":
        means = logps / lengths.clamp(min=1)  # (B, 2)
        return simpo(means[:, 0], means[:, 1], beta, gamma)
    loss = dpo if method == "dpo" else ipo
    return loss(logps[:, 0], logps[:, 1], reference[:, 0], reference[:, 1], beta)
