"""The T5 family: its shape rules, the Hugging Face export (logits equal to transformers'), cached decoding equal to
the full forward pass, span corruption's lengths, density and sentinels, and training with exact resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe.models.build import build_model
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import span_corruption_lengths
from llmrecipe.recipe.pretrain import ModelConfig

VOCAB = 300  # the tokenizer's ids; the model adds SENTINELS rows
SENTINELS = 8


def t5_shape(**changes) -> ModelShape:
    settings = dict(arch="t5", n_layer=2, n_decoder_layer=2, n_head=4, d_model=32, seq_len=32, sentinels=SENTINELS)
    settings.update(changes)
    return family("t5").shape(ModelConfig(**settings), VOCAB)


def tiny_t5(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(t5_shape(**changes)).eval()


def test_shape_takes_stack_depths_sentinel_rows_and_derived_target_length():
    shape = t5_shape(n_layer=3, n_decoder_layer=1, seq_len=128)
    assert (shape.n_layer, shape.n_decoder_layer) == (3, 1)
    assert shape.vocab_size == 320 and shape.vocab_size >= VOCAB + SENTINELS  # rounded up to a multiple of 64
    assert shape.target_len == span_corruption_lengths(128, 0.15, 3.0)[1] and not shape.tie_embeddings
    assert t5_shape(n_layer=2, n_decoder_layer=None).n_decoder_layer == 2  # n_layer serves both stacks
    assert family("t5").parameter_count(shape) == sum(p.numel() for p in build_model(shape).parameters())


def test_one_stack_families_reject_stack_depths():
    from llmrecipe.models.family import ShapeError

    with pytest.raises(ShapeError, match="n_decoder_layer"):
        family("llama").shape(ModelConfig(arch="llama", n_decoder_layer=2), 256)


def test_hugging_face_export_loads_in_transformers_with_equal_logits(tmp_path):
    pytest.importorskip("transformers")
    from transformers import T5ForConditionalGeneration

    from llmrecipe.export.hf import hf_logit_difference, write_hf_folder
    from tests.generate_helpers import save_artifact

    model = tiny_t5(n_layer=2, n_decoder_layer=3)
    save_artifact(model, tmp_path / "model")
    (tmp_path / "hf").mkdir()
    write_hf_folder(model, tmp_path / "model", tmp_path / "hf")
    assert hf_logit_difference(model, tmp_path / "hf") < 1e-4
    theirs = T5ForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    inputs = torch.randint(0, VOCAB, (2, 9))
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])  # the second row padded
    targets = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        ours = model(inputs, targets, mask)
        hf = theirs(input_ids=inputs, attention_mask=mask.long(), decoder_input_ids=targets).logits
    assert (ours - hf).abs().max() < 1e-4
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["feed_forward_proj"] == "gated-gelu" and config["num_decoder_layers"] == 3


def test_cached_decoding_equals_the_full_forward_pass():
    model = tiny_t5()
    inputs = torch.randint(0, VOCAB, (2, 11))
    mask = torch.tensor([[True] * 11, [True] * 7 + [False] * 4])
    targets = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        full = model(inputs, targets, mask)  # (B, T, V)
        cache = model.start_decoding(inputs, mask)
        first = model.decode(targets[:, :3], cache)  # a prompt of 3 decoder tokens, then one at a time
        steps = [model.decode(targets[:, t : t + 1], cache, last_only=True) for t in range(3, 8)]
    cached = torch.cat([first, torch.stack(steps, dim=1)], dim=1)
    assert torch.allclose(cached, full, atol=1e-5)


def test_padding_does_not_change_the_encoding_of_real_tokens():
    model = tiny_t5()
    inputs = torch.randint(0, VOCAB, (1, 6))
    padded = torch.cat([inputs, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    targets = torch.randint(0, VOCAB, (1, 4))
    with torch.no_grad():
        assert torch.allclose(model(inputs, targets), model(padded, targets, mask), atol=1e-5)
