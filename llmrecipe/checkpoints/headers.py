"""Reading a Hugging Face folder's files without torch: safetensors headers (names, dtypes, shapes) and the
tokenizer's size and special tokens."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

WEIGHT_INDEX = "model.safetensors.index.json"
MAX_HEADER_BYTES = 100 << 20
"""A safetensors header is JSON of a few hundred bytes per tensor; more than this is not a safetensors file."""
SAFETENSORS_DTYPES = {"BF16": "bf16", "F32": "fp32", "F16": "fp16"}
"""Stored dtypes an import reads, by their safetensors name."""


class HeaderError(ValueError):
    """A file that is not a readable safetensors file."""


def tensor_headers(path: Path) -> dict[str, dict[str, Any]]:
    """Tensor name -> {"dtype", "shape", "data_offsets"} from a safetensors file's header (the 8-byte little-endian
    header length, then that much JSON)."""
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) != 8:
            raise HeaderError(f"{path} is too short to be a safetensors file")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES:
            raise HeaderError(f"{path} is not a safetensors file (its header would be {length} bytes)")
        try:
            header = json.loads(f.read(length))
        except ValueError:
            raise HeaderError(f"{path} is not a safetensors file (its header is not JSON)") from None
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint: those its index names (sharded), else every *.safetensors."""
    index = folder / WEIGHT_INDEX
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [folder / name for name in names]
    return sorted(folder.glob("*.safetensors"))


def tokenizer_size(tokenizer_json: dict[str, Any]) -> int:
    """Ids the tokenizer can produce: one past its largest id, added tokens included."""
    vocab = tokenizer_json.get("model", {}).get("vocab") or {}
    ids = list(vocab.values()) if isinstance(vocab, dict) else list(range(len(vocab)))  # Unigram: a list of pairs
    ids += [token["id"] for token in tokenizer_json.get("added_tokens", [])]
    return max(ids) + 1 if ids else 0


def token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, or {"content": ...} in older files."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def token_id(tokenizer_json: dict[str, Any], text: str) -> int | None:
    for token in tokenizer_json.get("added_tokens", []):
        if token.get("content") == text:
            return token["id"]
    vocab = tokenizer_json.get("model", {}).get("vocab")
    return vocab.get(text) if isinstance(vocab, dict) else None


def id_token(tokenizer_json: dict[str, Any], wanted: int) -> str | None:
    for token in tokenizer_json.get("added_tokens", []):
        if token.get("id") == wanted:
            return token["content"]
    vocab = tokenizer_json.get("model", {}).get("vocab")
    if isinstance(vocab, dict):
        return next((text for text, index in vocab.items() if index == wanted), None)
    return None


def end_token(folder: Path, tokenizer_json: dict[str, Any], encoder_only: bool) -> str | None:
    """The token that ends a text for a decoder or an encoder-decoder, or that an encoder reads a text's summary
    from (its cls_token). The former is tokenizer_config.json's eos_token (a chat model's end of turn: Llama 3
    Instruct's <|eot_id|>, Qwen's <|im_end|>; T5's </s>), else generation_config.json's first eos_token_id."""
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    if encoder_only:
        return token_text(config.get("cls_token")) or ("[CLS]" if token_id(tokenizer_json, "[CLS]") is not None else None)
    eos = token_text(config.get("eos_token"))
    if eos is not None and token_id(tokenizer_json, eos) is not None:
        return eos
    generation = folder / "generation_config.json"
    if generation.is_file():
        eos_id = json.loads(generation.read_text(encoding="utf-8")).get("eos_token_id")
        eos_id = eos_id[0] if isinstance(eos_id, list) and eos_id else eos_id
        if isinstance(eos_id, int):
            return id_token(tokenizer_json, eos_id)
    return None
