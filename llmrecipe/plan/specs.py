"""Resolved specs: what each executor receives. User settings plus every value the compiler derived.

Step references are not here: upstream steps reach the executor as input artifacts, and renaming a
step must not change a fingerprint.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.plan import Frozen
from llmrecipe.recipe.data import DataOp, Source, Split
from llmrecipe.recipe.evaluate import SuiteConfig
from llmrecipe.recipe.finetune import DatasetConfig, LoraConfig
from llmrecipe.recipe.pretrain import OptimConfig


class Spec(Frozen):
    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset()
    """Fields that cannot change the step's outputs; each subclass says why for each one."""

    def fingerprinted(self) -> dict[str, Any]:
        """The spec as the step's identity sees it: without the fields that cannot change its outputs."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in self.NOT_FINGERPRINTED}


class DataSpec(Spec):
    """A document's split is a function of its text alone; the seed enters only through `mix_seed`, so changing
    it re-runs no data step that does not mix sources by weight."""

    sources: list[Source]
    ops: list[DataOp]
    split: Split
    on_bad_record: Literal["skip", "fail"]
    batch_mb: int
    workers: int
    mix_seed: int | None
    """The run's seed when a source has a mixing weight (it chooses the sampled documents), else None."""
    engine: Literal["local", "ray"] = "local"
    """The run's engine: local worker processes or Ray tasks."""
    ray_address: str | None = None

    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset(
        {
            "batch_mb",  # every op decides per document or over the whole corpus, so batch edges change nothing
            "workers",  # shard results are merged in shard order, however many processes computed them
            "engine",  # both engines run the same shard jobs and decide in the same order: the same bytes
            "ray_address",
        }
    )


class TokenizerSpec(Spec):
    type: Literal["bpe", "char"]
    vocab_size: int
    min_frequency: int
    eot_token: str


class TokenizeSpec(Spec):
    dtype: Literal["uint16", "uint32"]
    """Smallest unsigned integer type that holds every token id of the vocabulary."""
    eot_token: str


class TrainingSpec(Spec):
    """What every training step resolves: the model, the optimizer, the batch, budget and validation arithmetic,
    and the trainer's controls (every task gets all of them)."""

    model: ModelShape
    optim: OptimConfig
    batch_size: int
    micro_batch_size: int
    """Examples per forward pass and process."""
    grad_accum: int
    tokens_per_step: int
    total_steps: int | None
    """None when the budget is in epochs: the executor derives it from the train split's size."""
    epochs: float | None = None
    eval_every: int
    eval_batches: int
    early_stopping_patience: int | None = None
    on_nonfinite: Literal["stop", "skip", "rollback"] = "stop"
    activation_checkpointing: bool = False
    checkpoint_every: int
    log_every: int
    tensorboard: bool = False
    device: Literal["cpu", "cuda"]
    precision: Literal["fp32", "bf16"]
    compile: bool
    compile_reason: str = ""
    """Why `compile` is what it is (shown by `llmrecipe plan`)."""
    nproc: int = 1
    """Processes that train together (torch.distributed); each takes its slice of every step's batch."""
    sharding: Literal["ddp", "fsdp"] = "ddp"
    seed: int

    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset(
        {
            "checkpoint_every",  # resume is exact, so where checkpoints fall does not change the weights
            "log_every",  # only how often a metrics line is written
            "tensorboard",  # only where the metrics are also written
            # Like the process count below, compiled kernels compute the same arithmetic, only in another rounding
            # order; and `compile = "auto"` follows a measured peak, which must not make a cached step stale.
            "compile",
            "compile_reason",
            # Each process takes its slice of the same global batch, so the process count and the sharding change
            # only the float summation order, not what is trained (tests/test_distributed.py).
            "nproc",
            "sharding",
        }
    )

    def fingerprinted(self) -> dict[str, Any]:
        identity = super().fingerprinted()
        # A process's micro-batch is its share of the global one, which is what is trained: 1 process x 4 sequences
        # and 2 processes x 2 are the same step (and the same store entry, whoever launched the processes).
        identity["micro_batch_size"] = self.micro_batch_size * self.nproc
        return identity


class PretrainSpec(TrainingSpec):
    final_eval_batches: int | None = None
    """Batches of non-overlapping validation windows on which the best weights are scored at the end (None: not done)."""


class PreferenceSpec(Frozen):
    """A `preference` step's objective with its beta resolved (the method's default when the recipe leaves it)."""

    method: Literal["dpo", "ipo", "simpo"]
    beta: float
    gamma: float
    """SimPO's target reward margin (0 for the methods that have none)."""


class FinetuneSpec(TrainingSpec):
    """A `finetune` step resolved: the starting model's shape, the output shape, the chat template text, the LoRA
    targets and the batch arithmetic. The dataset is named by its file name; its content digest is in the step's
    external files (see llmrecipe/finetune/locate.py)."""

    task: Literal["sft", "classify", "continue", "seq2seq", "preference"]
    init_model: ModelShape
    """The shape of the starting model (its config.json)."""
    model: ModelShape
    """The shape of the output model: `init_model` with embedding rows for the added special tokens."""
    dataset: DatasetConfig | None
    """`sft`, `preference`, `classify`, `seq2seq`: the dataset settings, `path` cut to the file's name."""
    dataset_file: str | None
    """The dataset's absolute path on this machine."""
    chat_template: str | None
    """`sft`, `preference`: the Jinja chat template (the preset's text or the recipe's inline one)."""
    special_tokens: list[str]
    """`sft`, `preference`: tokens the template needs, added to the tokenizer when it lacks them."""
    end_of_turn: str | None
    """`sft`, `preference`: the token that ends an assistant turn (in the loss; generation stops there)."""
    seq_len: int
    """Tokens per training sequence: a packed sequence (`sft`), a window (`continue`), the longest input (`classify`)."""
    truncation: Literal["left", "drop"] = "left"
    """`sft`, `preference`: how a conversation longer than `seq_len` is fitted (see llmrecipe/finetune/fit.py)."""
    labels: list[str] | None
    class_weighting: Literal["none", "balanced"]
    pooling: Literal["last", "first"]
    """`classify`: `auto` resolved by the architecture (last token for decoders, first for `bert`)."""
    lora: LoraConfig | None
    """Adapters with their `targets` resolved to module-name suffixes; None for full fine-tuning."""
    preference: PreferenceSpec | None = None
    """`preference`: the objective; None for the other tasks."""

    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = TrainingSpec.NOT_FINGERPRINTED | frozenset(
        {"dataset_file"}  # where the file lies on this machine; its content digest is fingerprinted instead
    )


class ImportSpec(Spec):
    """An `import` step resolved: the model's shape read from config.json and the dtype its weights are held in.
    The checkpoint's files are named in the step's external files with their content digests (the identity);
    where they lie is not fingerprinted."""

    model: ModelShape
    dtype: Literal["bf16", "fp32"]
    """`auto` resolved by the stored dtype."""
    folder: str
    """The checkpoint's folder on this machine."""
    eot_token: str | None
    """The token that ends a text (decoders) or starts one for its summary (encoders)."""

    NOT_FINGERPRINTED: ClassVar[frozenset[str]] = frozenset({"folder"})  # the files' digests are fingerprinted


class EvaluateSpec(Spec):
    """Suites by name. A suite's data file is named here by its file name only; its content digest is in the
    step's external files (the path is machine-specific, the content is what the results depend on)."""

    suites: dict[str, SuiteConfig]
    batch_size: int
    worst: int
    bootstrap: int
    device: Literal["cpu", "cuda"]
    seed: int


class ExportSpec(Spec):
    format: Literal["onnx", "hf"]
    opset: int
    tolerance: float
    quantize: Literal["int8"] | None = None
    """None in specs written before int8 export existed; the recipe's `quantize` gives the value."""
