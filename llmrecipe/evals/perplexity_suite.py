"""The `perplexity` suite: loss, perplexity and bits per byte of a split or a text file, per document.

Scores are kept per document (eot-separated), so a paired bootstrap can compare two models document by
document; bits per byte compares models with different tokenizers fairly.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np

from llmrecipe.evals.perplexity import document_scores, target_nats, unigram_baseline
from llmrecipe.evals.stats import Metric
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, progress_bar
from llmrecipe.recipe.evaluate import PerplexitySuite
from llmrecipe.tokenizer.bytes import token_byte_lengths
from llmrecipe.training.tasks.windows import TokenFile

LN2 = math.log(2)
EXCERPT_CHARS = 240
MIN_WORST_TOKENS = 8
"""Documents shorter than this are left out of the worst list: a 2-token document's loss says little."""


def _loss(sums: dict[str, float]) -> float:
    return sums["nats"] / sums["tokens"] if sums["tokens"] else float("nan")


METRICS = {
    "loss": Metric(_loss, higher_is_better=False),
    "ppl": Metric(lambda sums: math.exp(min(_loss(sums), 700.0)), higher_is_better=False),
    "bpb": Metric(lambda sums: sums["byte_nats"] / LN2 / sums["bytes"] if sums["bytes"] else float("nan"), False),
}


def run(config: PerplexitySuite, env: SuiteEnv) -> SuiteResult:
    meta = json.loads((env.tokens_dir / "meta.json").read_text())
    tokens = stream(config, env, meta["dtype"])
    if config.max_tokens is not None:
        tokens = tokens[: config.max_tokens + 1]  # the first token is only context: max_tokens targets
    if len(tokens) < 2:
        where = f"the {config.split} split" if config.split else config.file
        empty = {name: np.zeros(0) for name in ("nats", "tokens", "byte_nats", "bytes")}
        return SuiteResult(empty, [], [], extra={"tokens": 0}, note=f"{where} has {len(tokens)} tokens: nothing to predict")
    byte_lengths = token_byte_lengths(env.tokenizer)
    progress = progress_bar(env, len(tokens) - 1, "tokens")
    nats = target_nats(env.model, tokens, env.model.shape.seq_len, env.batch_size, env.device, progress.advance)
    progress.close()
    documents = document_scores(tokens, nats, byte_lengths, env.eot_id)
    columns = {"nats": documents.nats, "tokens": documents.tokens, "byte_nats": documents.byte_nats, "bytes": documents.bytes}
    train = TokenFile(env.tokens_dir / "train.bin", meta["dtype"]).tokens
    extra = {
        "tokens": len(nats),
        "documents": len(documents.nats),
        # Scored on the same targets as the model, so the two losses compare directly.
        "unigram_loss": unigram_baseline(train, tokens[1:], meta["vocab_size"]),
    }
    examples = [
        {"document": i, "first_token": int(documents.first_token[i]), "tokens": int(documents.tokens[i])}
        for i in range(len(documents.nats))
    ]
    return SuiteResult(columns=columns, examples=examples, worst=worst_documents(tokens, documents, env), extra=extra)


def stream(config: PerplexitySuite, env: SuiteEnv, dtype: str) -> np.ndarray:
    """The token stream: a split as the tokenize step packed it, or a text file's paragraphs packed the same way."""
    if config.split is not None:
        return TokenFile(env.tokens_dir / f"{config.split}.bin", dtype).tokens
    text = env.data_path.read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    encoded = env.tokenizer.encode_batch(paragraphs)
    return np.array([t for e in encoded for t in (*e.ids, env.eot_id)], dtype=np.int64)


def worst_documents(tokens: np.ndarray, documents, env: SuiteEnv) -> list[dict]:
    """The documents with the highest loss per token, with the start of their text."""
    losses = documents.nats / np.maximum(documents.tokens, 1)
    eligible = np.flatnonzero(documents.tokens >= MIN_WORST_TOKENS)
    order = eligible[np.argsort(-losses[eligible], kind="stable")][: env.worst]
    worst = []
    for i in order:
        start = int(documents.first_token[i])
        ids = [int(t) for t in tokens[start : start + int(documents.tokens[i]) + 1] if t != env.eot_id]
        text = env.tokenizer.decode(ids, skip_special_tokens=False)
        worst.append({"document": int(i), "tokens": int(documents.tokens[i]), "loss": round(float(losses[i]), 4),
                      "text": text[:EXCERPT_CHARS]})
    return worst
