"""The suite registry: suite type -> the module that runs it (`run(config, env) -> SuiteResult`) and defines
its METRICS (name -> Metric over per-example column sums). Modules load only when a suite of that type runs."""

from __future__ import annotations

import importlib
from types import ModuleType

from llmrecipe.evals.stats import Metric

SUITES: dict[str, str] = {
    "perplexity": "llmrecipe.evals.perplexity_suite",
    "multiple_choice": "llmrecipe.evals.multiple_choice",
    "generation": "llmrecipe.evals.generation",
    "semantic_similarity": "llmrecipe.evals.semantic_similarity",
    "qa_factuality": "llmrecipe.evals.qa",
    "classification": "llmrecipe.evals.classification_suite",
    "samples": "llmrecipe.evals.samples_suite",
    "bias": "llmrecipe.evals.bias",
    "bias_pairs": "llmrecipe.evals.bias_pairs",
}


def suite_module(suite_type: str) -> ModuleType:
    return importlib.import_module(SUITES[suite_type])


def suite_metrics(suite_type: str) -> dict[str, Metric]:
    return suite_module(suite_type).METRICS
