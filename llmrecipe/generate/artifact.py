"""An artifact folder (a `pretrain` step's safetensors, or an `export` step's ONNX graph) -> a ready engine."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmrecipe.generate.chat import NoChatTemplate, find_chat_template, render_chat
from llmrecipe.generate.engine import Engine

Backend = Literal["auto", "torch", "onnx"]


class ArtifactError(ValueError):
    """The folder is not something we can generate with; the message says what to point at instead."""


@dataclass
class LoadedModel:
    engine: Engine
    folder: Path
    backend: str
    chat_template: str | None

    @property
    def name(self) -> str:
        return self.folder.name

    def chat_prompt(self, messages: list[dict]) -> str:
        if self.chat_template is None:
            raise NoChatTemplate(self.folder)
        tokenizer = self.engine.tokenizer
        eot = tokenizer.id_to_token(self.engine.eot_id) if self.engine.eot_id is not None else ""
        return render_chat(self.chat_template, messages, eos_token=eot, bos_token="")


def load_model(folder: Path, backend: Backend = "auto", threads: int | None = None, device: str = "auto") -> LoadedModel:
    """A pretrain artifact runs on torch (on the GPU where there is one, or on `device`); an export artifact on
    onnxruntime (or torch if it kept the weights)."""
    from tokenizers import Tokenizer

    from llmrecipe.models.registry import FAMILIES, family
    from llmrecipe.models.shape import ModelShape

    folder = Path(folder)
    for needed in ("config.json", "tokenizer.json"):
        if not (folder / needed).is_file():
            raise ArtifactError(
                f"{folder} has no {needed}: point at the folder of a pretrain or export step "
                "(`llmrecipe status RECIPE` lists them), or give RECIPE STEP"
            )
    config = json.loads((folder / "config.json").read_text())
    if "architectures" in config:
        raise ArtifactError(
            f"{folder} is a Hugging Face export ({config['architectures'][0]}): load it with transformers, "
            "or generate from the pretrain step or an ONNX export"
        )
    if config.get("task") == "classify":
        raise ArtifactError(
            f"{folder} is a classifier (a classify fine-tune over the labels {config['labels']}): it predicts labels, "
            "not text; generate from the step it started from (its `init`)"
        )
    shape = ModelShape.model_validate(config)
    if not family(shape.arch).decodes:
        decoders = ", ".join(name for name, f in FAMILIES.items() if f.decodes)
        raise ArtifactError(
            f"{folder} holds a `{shape.arch}` model; generation runs decoders that predict left to right ({decoders})"
        )
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    chosen = _choose_backend(folder, backend)
    if chosen == "onnx" and family(shape.arch).onnx_layout == "seq2seq":
        from llmrecipe.generate.decoders import OnnxEncoderDecoder

        decoder = OnnxEncoderDecoder(folder, shape, end_of_text_id(tokenizer), threads)
    elif chosen == "onnx":
        decoder = _onnx_decoder(folder, shape, threads)
    else:
        decoder = _torch_decoder(folder, device, end_of_text_id(tokenizer))
    engine = Engine(decoder, tokenizer, end_of_turn_id(folder, tokenizer) or end_of_text_id(tokenizer),
                    tokenizer.get_vocab_size())
    return LoadedModel(engine, folder, chosen, find_chat_template(folder))


def _choose_backend(folder: Path, backend: Backend) -> str:
    has_weights = (folder / "model.safetensors").is_file() or (folder / "checkpoint.json").is_file()  # or an import
    has_graph = (folder / "model.onnx").is_file() or (folder / "encoder_model.onnx").is_file()
    if backend == "torch" and not has_weights:
        raise ArtifactError(f"{folder} has no model.safetensors for the torch backend; use --backend onnx")
    if backend == "onnx" and not has_graph:
        raise ArtifactError(f"{folder} has no model.onnx; export it with an `export` step, or use --backend torch")
    if backend == "auto":
        if not (has_weights or has_graph):
            raise ArtifactError(f"{folder} holds neither model.safetensors nor model.onnx")
        return "torch" if has_weights else "onnx"
    return backend


def _torch_decoder(folder: Path, device: str, start_id: int | None):
    import torch

    from llmrecipe.generate.decoders import torch_decoder
    from llmrecipe.models.build import load_trained
    from llmrecipe.training.device import prepare_device

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        prepare_device(device, tf32=True)
    model, _ = load_trained(folder, device, dtype=None)  # an imported model in the dtype its import step chose
    return torch_decoder(model, start_id)


def _onnx_decoder(folder: Path, shape, threads: int | None):
    from llmrecipe.generate.decoders import OnnxDecoder

    decoder = OnnxDecoder(folder / "model.onnx", shape, threads)
    if "past_key_values.0.key" not in decoder.input_names:  # the graph's own names: its session is made on first need
        raise ArtifactError(
            f"{folder / 'model.onnx'} has no per-layer KV-cache inputs (an export from an older llmrecipe): "
            "run the export step again (`llmrecipe run RECIPE --force STEP`), or generate from the pretrain step"
        )
    return decoder


def end_of_turn_id(folder: Path, tokenizer) -> int | None:
    """A chat model's stop token: the `eos_token` its tokenizer_config.json names (a `finetune` sft step writes the
    template's end-of-turn token there, as Hugging Face chat models do)."""
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
    return tokenizer.token_to_id(eos) if isinstance(eos, str) else None


def end_of_text_id(tokenizer) -> int | None:
    """The special token that ends a document: the one named like `endoftext`, else the first special token."""
    specials = {i: t.content for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
    candidates = [i for i, content in specials.items() if "endoftext" in content.lower()] or list(specials)
    return min(candidates) if candidates else None
