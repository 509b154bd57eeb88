"""Resolved specs: what each executor receives. User settings plus every value the compiler derived.

Step references are not here: upstream steps reach the executor as input artifacts, and renaming a
step must not change a fingerprint.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from llmrecipe.plan.plan import Frozen
from llmrecipe.recipe.data import DataOp, Source, Split
from llmrecipe.recipe.evaluate import SamplesConfig
from llmrecipe.recipe.pretrain import OptimConfig


class Spec(Frozen):
    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset()
    """Fields that cannot change the step's outputs; each subclass says why for each one."""


class DataSpec(Spec):
    """No seed: a document's split is a function of its text alone, so changing the seed re-runs no data step."""

    sources: list[Source]
    ops: list[DataOp]
    split: Split


class TokenizerSpec(Spec):
    type: Literal["bpe", "char"]
    vocab_size: int
    min_frequency: int
    eot_token: str


class TokenizeSpec(Spec):
    dtype: Literal["uint16", "uint32"]
    """Smallest unsigned integer type that holds every token id of the vocabulary."""
    eot_token: str


class ModelShape(Frozen):
    """Everything needed to build the network; saved next to the weights as config.json."""

    arch: Literal["llama"]
    n_layer: int
    n_head: int
    n_kv_head: int
    d_model: int
    head_dim: int
    ffn_hidden: int
    vocab_size: int
    """The tokenizer's vocabulary rounded up to a multiple of 64 (faster matmuls; extra rows are never targets)."""
    seq_len: int
    dropout: float
    rope_theta: float
    norm_eps: float = 1e-5
    tie_embeddings: bool


class PretrainSpec(Spec):
    model: ModelShape
    optim: OptimConfig
    batch_size: int
    micro_batch_size: int
    grad_accum: int
    tokens_per_step: int
    total_steps: int
    eval_every: int
    eval_batches: int
    checkpoint_every: int
    log_every: int
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "bf16"]
    compile: bool
    seed: int

    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset(
        {
            "checkpoint_every",  # resume is exact, so where checkpoints fall does not change the weights
            "log_every",  # only how often a metrics line is written
        }
    )


class EvaluateSpec(Spec):
    suites: list[Literal["perplexity", "samples"]]
    splits: list[Literal["val", "test"]]
    max_tokens: int | None
    batch_size: int
    samples: SamplesConfig
    device: Literal["cpu", "cuda"]
    seed: int


class ExportSpec(Spec):
    format: Literal["onnx"]
    opset: int
    tolerance: float
