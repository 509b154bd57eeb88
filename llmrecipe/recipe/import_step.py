"""The `import` step: a pre-trained Hugging Face checkpoint on local disk, a model wherever a `pretrain` step is one."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from llmrecipe.recipe.base import Section


class ImportStep(Section):
    """A local Hugging Face model folder (config.json, *.safetensors sharded or not, tokenizer.json): its weights are
    referenced by content digest, never copied into the store; its tokenizer, special tokens and chat template
    come with it. Supported `model_type`s: llama (LLaMA 1-3, SmolLM), mistral, qwen2, qwen3, gpt2, bert."""

    kind: Literal["import"]
    path: str | None = None
    """The checkpoint's folder; relative paths are relative to the recipe. Override it with
    `--set steps.NAME.path=PATH`."""
    package: str | None = None
    """Instead of `path`: an installed Python package that ships the checkpoint as package data (no network)."""
    glob: str | None = None
    """With `package`: the checkpoint's folder inside the package (a glob matching exactly one folder)."""
    dtype: Literal["bf16", "fp32", "auto"] = "auto"
    """How to hold the weights when the model is loaded to generate, serve or evaluate: `bf16`, `fp32`, or `auto`
    (the checkpoint's own: bf16 for a bf16 checkpoint, fp32 otherwise). Fine-tuning trains fp32 master weights
    whatever this says."""

    @model_validator(mode="before")
    @classmethod
    def _own_tokenizer(cls, data):
        if isinstance(data, dict) and "tokenizer" in data:
            raise ValueError("`tokenizer`: an imported model brings its own tokenizer (tokenizer.json in its folder), "
                             "which its embedding rows were trained for; remove `tokenizer` from the import step")
        return data

    @model_validator(mode="after")
    def _one_origin(self) -> "ImportStep":
        if (self.path is None) == (self.package is None):
            raise ValueError("give exactly one of `path` (a local folder) or `package` (an installed package)")
        if self.glob is not None and self.package is None:
            raise ValueError("`glob` picks the folder inside a `package`; with `path`, name the folder itself")
        return self
