"""Tiny models and artifact folders shared by the generate, serve and export tests."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from llmrecipe.models.build import build_model
from llmrecipe.models.shape import ModelShape
from llmrecipe.tokenizer.train import train_bpe

EOT = "<|endoftext|>"
TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A stitch in time saves nine; look before you leap.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; fortune favours the bold. ünïcödé ✓",
] * 4


STYLES = {"llama-mha": ("llama", 4), "llama-gqa": ("llama", 2), "gpt2": ("gpt2", 4)}
"""Decoder styles the generation and export tests run on: arch and key/value heads."""


def tiny_shape(
    n_kv_head: int = 2, vocab_size: int = 64, seq_len: int = 32, tie: bool = True, arch: str = "llama"
) -> ModelShape:
    return ModelShape(
        arch=arch, n_layer=2, n_head=4, n_kv_head=n_kv_head, d_model=32, head_dim=8, ffn_hidden=64,
        vocab_size=vocab_size, seq_len=seq_len, dropout=0.0, rope_theta=10000.0, tie_embeddings=tie,
    )


def lively_model(shape: ModelShape, seed: int = 0) -> torch.nn.Module:
    """A random model with large weights: its greedy output varies instead of repeating one token."""
    torch.manual_seed(seed)
    model = build_model(shape).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.normal_(0.0, 0.3)
    return model


def save_artifact(model: torch.nn.Module, folder: Path, chat_template: str | None = None) -> Path:
    """The `pretrain` artifact layout (config.json, model.safetensors, tokenizer.json) with a tiny BPE tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.shape.tie_embeddings:
        state.pop("lm_head.weight")
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(model.shape.model_dump_json(indent=2))
    train_bpe(TEXTS, vocab_size=model.shape.vocab_size, min_frequency=2, eot_token=EOT).save(
        str(folder / "tokenizer.json")
    )
    if chat_template is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": chat_template}))
    return folder


def style_shape(style: str, **kwargs) -> ModelShape:
    arch, n_kv_head = STYLES[style]
    return tiny_shape(n_kv_head=n_kv_head, arch=arch, **kwargs)
