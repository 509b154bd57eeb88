"""Generated answers against references by meaning rather than overlap: cosine similarity of sentence embeddings,
and BERTScore precision, recall and F1 (llmrecipe/evals/meaning.py).

The encoder is the recipe's choice: an imported encoder (all-MiniLM-L6-v2, say), or the evaluated model's own
hidden states. Generations and references are stripped before they are encoded, as bert-score strips them. With
idf, weights come from all the references once; bootstrap intervals then resample examples with those weights
held fixed.
"""

from __future__ import annotations

import numpy as np

from llmrecipe.embed import TextEncoder, mean_embedding
from llmrecipe.evals.generation import answer_prompts
from llmrecipe.evals.meaning import bertscore, cosine_similarity, idf_of
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, mean
from llmrecipe.recipe.evaluate import SemanticSimilaritySuite, encoder_input

SCORES = ("cosine", "bertscore_precision", "bertscore_recall", "bertscore_f1")
"""Per-example columns, each averaged over the examples into the metric of the same name."""


METRICS = {name: mean(name) for name in SCORES}


def run(config: SemanticSimilaritySuite, env: SuiteEnv) -> SuiteResult:
    answers = answer_prompts(config, env)
    examples, predictions = answers.examples, answers.predictions
    encoder = suite_encoder(config, env)
    layer = encoder.layers if config.layer is None else config.layer
    reader = f"encoder '{config.encoder}'" if config.encoder else "the evaluated model's own states"
    env.ctx.log(f"suite {env.name}: meaning read by {reader} ({encoder.layers} blocks; BERTScore on block {layer}"
                f"{', idf-weighted' if config.idf else ''})")
    columns = score_pairs(encoder, predictions, answers.references, layer, config.idf, env.batch_size)
    order = np.lexsort((columns["cosine"], columns["bertscore_f1"]))[: env.worst]  # lowest F1 first, then cosine
    worst = [{**examples[i], **{name: round(float(columns[name][i]), 4) for name in ("bertscore_f1", "cosine")}}
             for i in order]
    extra = {"prompts_cut": answers.prompts_cut, "texts_cut": int(columns.pop("cut").sum()),
             "empty_generations": sum(not p for p in predictions), "layer": layer}
    return SuiteResult(columns=columns, examples=examples, worst=worst, extra=extra)


def suite_encoder(config: SemanticSimilaritySuite, env: SuiteEnv) -> TextEncoder:
    """The suite's encoder step (its artifact is an input of the evaluate step), or the evaluated model itself."""
    if config.encoder is None:
        return TextEncoder(env.model, env.tokenizer, env.device)
    return TextEncoder.load(env.ctx.inputs[encoder_input(config.encoder)], env.device)  # fp32 weights


def score_pairs(encoder: TextEncoder, predictions: list[str], references: list[str], layer: int, idf: bool,
                batch_size: int) -> dict[str, np.ndarray]:
    """Per example: the four scores, `count` (1) and `cut` (1 when either text was longer than the encoder's
    context). Texts are stripped first, as bert-score strips them."""
    texts = [text.strip() for text in predictions + references]
    final = encoder.token_states(texts, batch_size=batch_size)
    matched = final if layer == encoder.layers else encoder.token_states(texts, layer, batch_size)
    candidates, wanted = matched[: len(predictions)], matched[len(predictions) :]
    weights = idf_of([reference.ids for reference in wanted]) if idf else None
    scores = [bertscore(c, r, weights) for c, r in zip(candidates, wanted)]
    return {
        "cosine": np.array([_cosine(p, r) for p, r in zip(final[: len(predictions)], final[len(predictions) :])]),
        "bertscore_precision": np.array([s.precision for s in scores]),
        "bertscore_recall": np.array([s.recall for s in scores]),
        "bertscore_f1": np.array([s.f1 for s in scores]),
        "count": np.ones(len(predictions)),
        "cut": np.array([float(p.cut or r.cut) for p, r in zip(final[: len(predictions)], final[len(predictions) :])]),
    }


def _cosine(prediction, reference) -> float:
    """Cosine of the two embeddings; 0 for an empty generation (nothing of the reference's meaning was given)."""
    if all(prediction.special) or all(reference.special):
        return 0.0
    return float(cosine_similarity(mean_embedding(prediction.states)[None], mean_embedding(reference.states)[None])[0])
