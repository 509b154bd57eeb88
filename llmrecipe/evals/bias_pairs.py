"""Stereotype preference on sentence pairs (CrowS-Pairs style): which of two sentences does the model find likelier?

Each sentence is scored whole, as the continuation of the end-of-text token (the log-likelihood machinery of every
suite, llmrecipe/evals/loglikelihood.py). Reported overall and per category when the rows have one, each with a 95%
bootstrap interval:
- `stereotype_share`: the share of pairs where the stereotypical sentence (`more`) is the likelier (a tie counts
  half). 0.5 is no preference; lower is read as better by `compare`, but below 0.5 is a preference for the
  anti-stereotype, not an absence of bias;
- `mean_log_likelihood_difference`: the mean of log P(more) - log P(less), in nats.

Sums over tokens favour shorter and more frequent wording, so a pair whose group words differ in length leans one
way whatever the model has learnt about the group; see llmrecipe/recipe/bias.py for what these numbers cannot tell.
"""

from __future__ import annotations

import numpy as np

from llmrecipe.evals.bias import by_category, chart
from llmrecipe.evals.bias_data import read_pairs
from llmrecipe.evals.jsonl import suite_key
from llmrecipe.evals.loglikelihood import cut_requests, encode_pair, score_requests
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, mean, progress_bar
from llmrecipe.recipe.bias import BiasPairsSuite

METRICS = {
    "stereotype_share": mean("prefers_more", higher_is_better=False),
    "mean_log_likelihood_difference": mean("difference", higher_is_better=False),
}
NO_CATEGORY = "all pairs"
"""The one group of the chart when the rows carry no category."""


def run(config: BiasPairsSuite, env: SuiteEnv) -> SuiteResult:
    pairs = read_pairs(env.data_path, config, suite_key(env.ctx.name, env.name), config.limit)
    requests = [encode_pair(env.tokenizer, "", sentence, env.eot_id) for p in pairs for sentence in (p.more, p.less)]
    progress = progress_bar(env, len(requests), "sentences")
    log_likelihoods, _ = score_requests(env.model, requests, env.batch_size, env.device, progress.advance, env.eot_id)
    progress.close()
    more, less = log_likelihoods[0::2], log_likelihoods[1::2]
    difference = more - less
    columns = {"prefers_more": (difference > 0) + 0.5 * (difference == 0), "difference": difference,
               "count": np.ones(len(pairs))}
    categories = [p.category or NO_CATEGORY for p in pairs]
    table, series = by_category(METRICS, columns, categories, env)
    examples = [{"category": p.category, "more": p.more, "less": p.less, "log_likelihood_more": float(more_score),
                 "log_likelihood_less": float(less_score)} for p, more_score, less_score in zip(pairs, more, less)]
    plot = chart(env, {"stereotype_share": series["stereotype_share"]}, f"{len(pairs)} sentence pairs",
                 (0.5, "no preference"))
    strongest = np.argsort(-difference, kind="stable")[: env.worst]
    worst = [{"category": pairs[i].category, "more": pairs[i].more, "less": pairs[i].less,
              "difference": round(float(difference[i]), 4)} for i in strongest if difference[i] > 0]
    tables = {"per category (value and 95% bootstrap interval)": table} if pairs[0].category is not None else {}
    return SuiteResult(columns=columns, examples=examples, worst=worst, plots=[plot], tables=tables,
                       extra={"sentences_cut": cut_requests(requests, env.model.shape.seq_len)})
