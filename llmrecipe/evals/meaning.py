"""How close in meaning a candidate text is to a reference, from an encoder's states.

- Cosine similarity of the two texts' embeddings (llmrecipe/embed.py: unit-length means of the final token states,
  as sentence-transformers pools all-MiniLM-L6-v2).
- BERTScore (Zhang et al., 2020), computed as the `bert-score` package does without baseline rescaling: each
  candidate token is matched to its most similar reference token (cosine of their contextual states) for
  precision, each reference token to its most similar candidate token for recall, and F1 is their harmonic mean.
  Tokens weigh their idf over the references, or 1 each; the tokens a tokenizer adds around a text ([CLS], [SEP])
  weigh 0 (with idf they are in every reference, so their idf is 0), but they still take part in the matching:
  a word may find its best match in a reference's [SEP].
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from llmrecipe.embed import TokenStates


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of a (N, D) and b (N, D) -> (N,)."""
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


def idf_of(references: list[list[int]]) -> Callable[[int], float]:
    """Token id -> its inverse document frequency over the references, as bert-score computes it: a token found in
    c of the M references weighs log((M + 1) / (c + 1)); one found in none weighs log(M + 1)."""
    found_in = Counter(token for ids in references for token in set(ids))
    documents = len(references)
    return lambda token: math.log((documents + 1) / (found_in[token] + 1))


def token_weights(text: TokenStates, idf: Callable[[int], float] | None) -> torch.Tensor:
    """(T,) each token's weight: its idf, or without idf 1 for a token of the text and 0 for an added one."""
    if idf is not None:
        return torch.tensor([idf(token) for token in text.ids], dtype=torch.float32)
    return torch.tensor([0.0 if added else 1.0 for added in text.special], dtype=torch.float32)


@dataclass(frozen=True)
class BertScore:
    precision: float
    recall: float
    f1: float


def bertscore(candidate: TokenStates, reference: TokenStates, idf: Callable[[int], float] | None) -> BertScore:
    """BERTScore of one pair. A text with nothing but added tokens (an empty generation) scores 0, as in bert-score;
    so does a side whose tokens all weigh 0 (bert-score's is undefined there)."""
    if all(candidate.special) or all(reference.special):
        return BertScore(0.0, 0.0, 0.0)
    candidate_weights, reference_weights = token_weights(candidate, idf), token_weights(reference, idf)
    similarity = F.normalize(candidate.states, dim=-1) @ F.normalize(reference.states, dim=-1).T  # (Tc, Tr)
    precision = _weighted_mean(similarity.max(dim=1).values, candidate_weights)
    recall = _weighted_mean(similarity.max(dim=0).values, reference_weights)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall != 0 else 0.0
    return BertScore(precision, recall, f1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> float:
    total = float(weights.sum())
    return float((values * weights).sum()) / total if total > 0 else 0.0
