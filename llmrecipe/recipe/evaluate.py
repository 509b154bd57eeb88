"""The `evaluate` step: how good is a trained model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrecipe.recipe.base import Section, StepName


class SamplesConfig(Section):
    """Continuations sampled from the starts of held-out documents, to read what the model writes."""

    count: int = Field(default=3, ge=0)
    prompt_tokens: int = Field(default=16, ge=1)
    """Tokens of the held-out document given as the prompt."""
    max_new_tokens: int = Field(default=64, ge=1)
    temperature: float = Field(default=0.8, ge=0.0)
    """0 means greedy decoding."""
    top_k: int | None = Field(default=50, ge=1)


class EvaluateStep(Section):
    """Validation and test loss, perplexity, bits per byte, a unigram baseline and sampled text."""

    kind: Literal["evaluate"]
    model: StepName
    """The `pretrain` step whose final weights are evaluated."""
    suites: list[Literal["perplexity", "samples"]] = ["perplexity", "samples"]
    splits: list[Literal["val", "test"]] = ["val", "test"]
    """Held-out splits to measure; a split the data step left empty is reported as such."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Cap on the tokens scored per split (all of them when unset)."""
    batch_size: int = Field(default=8, ge=1)
    samples: SamplesConfig = SamplesConfig()
