"""The `tokenizer` step: a lossless tokenizer trained on a data step's train split."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrecipe.recipe.base import Section, StepName


class TokenizerStep(Section):
    """Train a tokenizer and save it as a Hugging Face `tokenizer.json`."""

    kind: Literal["tokenizer"]
    data: StepName
    """The `data` step whose train split the tokenizer learns from."""
    type: Literal["bpe", "char"] = "bpe"
    """`bpe`: byte-level BPE (GPT-2 style). `char`: one token per character, unseen characters fall back to bytes."""
    vocab_size: int = Field(default=4096, ge=32, le=1_000_000)
    """Size of the vocabulary, special tokens included. For `char` it is an upper bound."""
    min_frequency: int = Field(default=2, ge=1)
    """A merge (bpe) or a character (char) must occur at least this often to enter the vocabulary."""
    eot_token: str = "<|endoftext|>"
    """Special token put between documents; the model learns that a document ends there."""
