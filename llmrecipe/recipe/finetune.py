"""The `finetune` step: a trained model adapted to a task (chat, classification) or a domain, optionally with LoRA."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmrecipe.recipe.augment import AugmentOp
from llmrecipe.recipe.base import MAX_SEQ_LEN, MAX_WIDTH, Section, StepName
from llmrecipe.recipe.pretrain import Budget, OptimConfig
from llmrecipe.recipe.training import TrainingControls


class DatasetConfig(Section):
    """A JSONL file of labelled examples (`sft`, `classify`, `seq2seq`) or of preference pairs (`preference`); its
    content digest is part of the step's identity."""

    path: str
    """The JSONL file, relative to the recipe; override it with `--set steps.NAME.dataset.path=PATH`."""
    split_field: str = "split"
    """When rows carry this field, its value picks the split: `train`, `validation`/`val` (held out), `test`
    (left out of fine-tuning)."""
    val_fraction: float = Field(default=0.1, ge=0.0, lt=1.0)
    """When the file has no validation rows (no split field, or only train/test): the share of train rows held out
    for validation, chosen by a stable hash of the text (`classify`) or the prompt (`sft`, `preference`: rows repeating
    a prompt stay on one side, so validation prompts are unseen)."""
    text_field: str = "text"
    """`classify`: the text to classify."""
    label_field: str = "label"
    """`classify`: the label of the text."""
    prompt_field: str = "prompt"
    """`sft`: the user's turn of a prompt/response pair; `seq2seq`: the input text; `preference`: the prompt both
    responses answer (a user turn, or a list of messages)."""
    response_field: str = "response"
    """`sft`: the assistant's turn of a prompt/response pair; `seq2seq`: the output text."""
    messages_field: str = "messages"
    """`sft`: a list of `{"role", "content"}` turns (system/user/assistant); used by rows that have it instead of a
    prompt/response pair."""
    format: Literal["pairs", "serve_log"] = "pairs"
    """`preference`: how rows become pairs. `pairs`: each row is one pair, `{prompt, chosen, rejected}` (field names
    below), the responses as strings or as lists of assistant messages; without a prompt field, `chosen` and
    `rejected` are whole conversations that share all but their last assistant turn. `serve_log`: the log of
    `llmrecipe serve --log`, where a corrected chat answer gives (correction chosen, answer rejected) and two answers
    to one conversation rated differently through /v1/feedback give (higher rated chosen); the step counts the pairs
    by rule and the lines left out by reason."""
    chosen_field: str = "chosen"
    """`preference`: the preferred response."""
    rejected_field: str = "rejected"
    """`preference`: the response that lost to `chosen`."""
    augment: list[AugmentOp] = Field(default=[], max_length=16)
    """`classify` and `sft`: ops that make more train rows, in order (validation and test rows are never touched),
    e.g. `[{ op = "eda", rate = 0.1 }, { op = "char_noise", rate = 0.03 }, { op = "oversample", target = 1.0 }]`.
    `classify` alters the text; `sft` alters the user's turns and keeps the responses it learns to write intact."""


class LoraConfig(Section):
    """Low-rank adapters (Hu et al., 2021): W x + (alpha / rank) * B A x on the target linear layers, W frozen."""

    rank: int = Field(default=8, ge=1, le=MAX_WIDTH)
    alpha: float = Field(default=16.0, gt=0)
    """Scale of the adapter's output is alpha / rank."""
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Dropout on the adapter's input during training."""
    targets: list[str] | None = Field(default=None, min_length=1)
    """Linear layers to adapt, by module-name suffix (e.g. `q_proj`, `attn.qkv`, `mlp.fc`). Unset: the attention
    projections of the architecture (`llama`: q_proj, k_proj, v_proj, o_proj; `gpt2`: attn.qkv, attn.proj)."""
    merge: bool = True
    """Write `model.safetensors` with the adapters merged into plain weights (what export and generation load);
    the adapters alone are saved as `adapter.safetensors` either way. With `false` the output holds the starting
    weights and the adapters, and loaders merge them."""


class FinetuneOptim(OptimConfig):
    """The optimizer of `pretrain` with defaults for adapting a trained model: a 10x lower peak learning rate and
    a short warmup, so the pre-trained weights are nudged rather than overwritten."""

    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate, reached at the end of warmup (LoRA adapters usually want more, e.g. 1e-3)."""
    warmup: int = Field(default=10, ge=0)
    """Warmup length in optimizer steps."""


class FinetuneStep(TrainingControls):
    """Continue training a `pretrain` or `finetune` step's model on a task: instruction/chat tuning (`sft`),
    learning from preferred and rejected answers (`preference`), classification (`classify`) or more pre-training on
    a domain corpus (`continue`)."""

    kind: Literal["finetune"]
    init: StepName
    """The `pretrain`, `import` or `finetune` step whose model (and tokenizer) this step starts from."""
    task: Literal["sft", "classify", "continue", "seq2seq", "preference"]
    """`sft`: learn to answer in a chat format, loss on the assistant's tokens only; `preference`: learn from pairs of a
    chosen and a rejected answer to one prompt (`method`: DPO, IPO or SimPO), in the chat format; `classify`: a
    classification head on the model; `continue`: next-token training on the tokens of a `data` step (domain
    adaptation); `seq2seq`: text-to-text for an encoder-decoder (`t5`): the prompt to the encoder, the loss on the
    response."""
    data: StepName | None = None
    """`continue` only: the `data` step whose train split is tokenized with the init model's tokenizer."""
    dataset: DatasetConfig | None = None
    """`sft`, `preference`, `classify` and `seq2seq`: the JSONL examples."""
    template: Literal["chatml"] | None = None
    """`sft`, `preference`: the chat format preset. `chatml`: `<|im_start|>role\\ncontent<|im_end|>\\n` turns. Unset:
    the init model's own chat template when it is an imported model that brings one (its end-of-sequence token ends a
    turn), else `chatml`."""
    chat_template: str | None = None
    """`sft`, `preference`: an inline Jinja chat template (Hugging Face style: `messages`, `add_generation_prompt`)
    used instead of the preset; give its `special_tokens` and `end_of_turn` too."""
    special_tokens: list[str] = []
    """`sft`, `preference` with `chat_template`: the template's special tokens, added to the tokenizer (embeddings
    resized)."""
    end_of_turn: str | None = None
    """`sft`, `preference` with `chat_template`: the token that ends an assistant turn (one of `special_tokens`); the
    model learns to produce it, and generation stops there."""
    max_seq_len: int | None = Field(default=None, ge=2, le=MAX_SEQ_LEN)
    """Tokens per training sequence, at most the init model's `seq_len` (the default): the length of a packed row
    for `sft` (longer examples are fitted by `truncation`), of a prompt with either response for `preference`, of a
    window for `continue`, and of each side of a `seq2seq` pair."""
    truncation: Literal["left", "drop"] = "left"
    """`sft`, `preference`: what happens to a conversation longer than `max_seq_len`. `left`: its beginning goes
    (earlier turns, then the start of the prompt; system messages and the template's markers stay) so the last response
    is whole, and a row whose response alone is too long is dropped; `drop`: every over-long row is left out. The counts
    are in the step's metrics and log; a step where fewer than half the train rows keep their response fails. A
    preference pair is fitted as one: its prompt is cut until the longer response fits."""
    method: Literal["dpo", "ipo", "simpo"] = "dpo"
    """`preference`: the objective. `dpo` (Rafailov et al., 2023): -log sigmoid(beta * h), h the gap between the
    chosen and the rejected response's log-probability ratios to the starting model (summed over response tokens);
    `ipo` (Azar et al., 2023): (h - 1 / (2 beta))^2, which stops at a margin instead of pushing without bound;
    `simpo` (Meng et al., 2024): -log sigmoid(beta * (mean log-prob of chosen - of rejected) - gamma), per-token
    means and no reference model. The starting model's log-probabilities (dpo, ipo) are computed once before
    training; with LoRA the reference is the same weights with the adapters off."""
    beta: float | None = Field(default=None, gt=0)
    """`preference`: the reward scale. Unset: the method's own (`DEFAULT_BETA`: 0.1 for `dpo` and `ipo`, 2.0 for
    `simpo`, each paper's setting)."""
    gamma: float = Field(default=0.5, ge=0)
    """`preference` with `method = "simpo"`: the target reward margin between chosen and rejected, in reward units
    (the paper's gamma; its gamma/beta ratio is gamma / beta)."""
    labels: list[str] | None = Field(default=None, min_length=2)
    """`classify`: the expected label set, in order; data whose labels differ fail before training. Unset: the sorted
    labels of the train split, recorded in the output."""
    class_weighting: Literal["none", "balanced"] = "none"
    """`classify`: `balanced` weighs each class's loss by n_examples / (n_classes * n_class_examples)."""
    pooling: Literal["auto", "last", "first"] = "auto"
    """`classify`: the token whose state feeds the head; `auto` is the last token for decoders, the first for `bert`."""
    optim: FinetuneOptim = FinetuneOptim()
    budget: Budget
    eval_every: int = Field(default=50, ge=1)
    """Measure validation loss every this many steps (and at the end)."""
    lora: LoraConfig | None = None
    """Train low-rank adapters instead of all weights (absent: full fine-tuning)."""

    @model_validator(mode="after")
    def _inputs_fit_the_task(self) -> "FinetuneStep":
        if self.task == "continue":
            if self.data is None:
                raise ValueError("task = 'continue' trains on a data step's tokens: give `data = \"STEP\"`")
            if self.dataset is not None:
                raise ValueError("task = 'continue' reads `data` (a data step), not `dataset`; remove [dataset]")
        else:
            if self.dataset is None:
                raise ValueError(f"task = '{self.task}' needs its examples: add [steps.NAME.dataset] with a `path`")
            if self.data is not None:
                raise ValueError(f"task = '{self.task}' reads `dataset` (a JSONL file); `data` is for 'continue'")
        preference_settings = sorted({"method", "beta", "gamma"} & self.model_fields_set)
        if self.task != "preference" and preference_settings:
            raise ValueError(f"{', '.join(preference_settings)}: settings of task = 'preference'; remove them or set "
                             "task = \"preference\"")
        if self.method != "simpo" and "gamma" in self.model_fields_set:
            raise ValueError(f"gamma is SimPO's target margin; method = '{self.method}' has none: remove gamma or "
                             "set method = \"simpo\"")
        augmented = {op.op for op in self.dataset.augment} if self.dataset else set()
        if augmented and self.task not in ("classify", "sft"):
            raise ValueError(f"dataset.augment is for task = 'classify' or 'sft', not '{self.task}'; remove it")
        if "oversample" in augmented and self.task != "classify":
            raise ValueError("the `oversample` augment op balances labels, which only task = 'classify' has; remove "
                             "it (or use `eda` / `char_noise` to make more rows)")
        if self.chat_template is not None and self.end_of_turn is None:
            raise ValueError("an inline `chat_template` needs `end_of_turn`: the token that ends an assistant turn")
        if self.end_of_turn is not None and self.end_of_turn not in self.special_tokens:
            raise ValueError(f"end_of_turn = '{self.end_of_turn}' is not one of special_tokens = {self.special_tokens}")
        if self.chat_template is None and (self.special_tokens or self.end_of_turn is not None):
            raise ValueError("`special_tokens` and `end_of_turn` belong to an inline `chat_template`; the preset "
                             "`template` brings its own")
        return self


CHAT_TASKS = ("sft", "preference")
"""Tasks whose rows are conversations rendered with the chat template (whose tokens join the tokenizer)."""

DEFAULT_BETA: dict[str, float] = {"dpo": 0.1, "ipo": 0.1, "simpo": 2.0}
"""`preference`: beta when the recipe leaves it unset, by method; the plan shows the value used."""

CHAT_TEMPLATES: dict[str, tuple[str, list[str], str]] = {
    "chatml": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        ["<|im_start|>", "<|im_end|>"],
        "<|im_end|>",
    ),
}
"""Preset `template` -> (Jinja text, its special tokens, the end-of-turn token). ChatML is OpenAI's format, also
used by Qwen and many open chat models."""
