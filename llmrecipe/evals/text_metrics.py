"""Generated text against a reference: exact match, token F1, ROUGE-L, and sacrebleu's BLEU and chrF.

Exact match and token F1 follow the SQuAD evaluation script (lower-case, drop punctuation and the
articles a/an/the, collapse whitespace). ROUGE-L follows Lin (2004) with the tokenization of Google's
`rouge_score` (lower-case, runs of characters other than a-z and 0-9 separate tokens). BLEU and chrF
are sacrebleu's, kept as per-sentence sufficient statistics so a corpus score can be recomputed on any
resample of the sentences (for confidence intervals).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

import numpy as np

ARTICLES = re.compile(r"\b(a|an|the)\b")
NOT_ALPHANUMERIC = re.compile(r"[^a-z0-9]+")


def normalize_answer(text: str) -> str:
    """SQuAD's normalization: lower-case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """Harmonic mean of token precision and recall over the normalized bags of words."""
    predicted, wanted = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not wanted:
        return float(predicted == wanted)  # both empty is a match; one empty is not
    common = sum((Counter(predicted) & Counter(wanted)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def rouge_tokens(text: str) -> list[str]:
    return NOT_ALPHANUMERIC.sub(" ", text.lower()).split()


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1: longest common subsequence of tokens over the lengths of prediction and reference."""
    predicted, wanted = rouge_tokens(prediction), rouge_tokens(reference)
    if not predicted or not wanted:
        return 0.0
    common = longest_common_subsequence(predicted, wanted)
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(wanted)
    return 2 * precision * recall / (precision + recall)


def longest_common_subsequence(a: list[str], b: list[str]) -> int:
    """Classic dynamic programme, one row at a time."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


@lru_cache(maxsize=1)
def _sacrebleu_metrics():
    from sacrebleu.metrics import BLEU, CHRF

    return BLEU(), CHRF()


def bleu_statistics(predictions: list[str], references: list[str]) -> np.ndarray:
    """(sentences, 10): per sentence [hypothesis length, reference length, matches 1-4, totals 1-4]."""
    bleu, _ = _sacrebleu_metrics()
    return np.asarray(bleu._extract_corpus_statistics(predictions, [references]), dtype=np.float64).reshape(-1, 10)


def chrf_statistics(predictions: list[str], references: list[str]) -> np.ndarray:
    """(sentences, 18): per sentence sacrebleu's character and word n-gram match counts."""
    _, chrf = _sacrebleu_metrics()
    return np.asarray(chrf._extract_corpus_statistics(predictions, [references]), dtype=np.float64).reshape(-1, 18)


def bleu_from_statistics(summed: list[float]) -> float:
    """sacrebleu's corpus BLEU (0-100) from statistics summed over sentences."""
    bleu, _ = _sacrebleu_metrics()
    return float(bleu._compute_score_from_stats([int(round(x)) for x in summed]).score)


def chrf_from_statistics(summed: list[float]) -> float:
    """sacrebleu's corpus chrF (0-100) from statistics summed over sentences."""
    _, chrf = _sacrebleu_metrics()
    return float(chrf._compute_score_from_stats([int(round(x)) for x in summed]).score)
