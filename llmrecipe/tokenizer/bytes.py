"""How many UTF-8 bytes each token id stands for, and loading a saved tokenizer folder.

Bits per byte (loss summed over tokens / bytes of text) compares models with different tokenizers; it
needs the byte length of every id, which this module derives from the vocabulary alone.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders

BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
"""A byte-fallback token (`decoders.ByteFallback` turns it back into one raw byte)."""


@lru_cache(maxsize=1)
def unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's `bytes_to_unicode`: byte-level BPE writes each byte as one printable character.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to code points 256 and up,
    in byte order (the same table as `pre_tokenizers.ByteLevel.alphabet()`).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    shifted = (byte for byte in range(256) if byte not in table)
    table.update({byte: chr(256 + offset) for offset, byte in enumerate(shifted)})
    return {character: byte for byte, character in table.items()}


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each id decodes to, indexed by id (int64, one entry per id); 0 for special tokens."""
    byte_level = isinstance(tokenizer.decoder, decoders.ByteLevel)
    special = {token_id for token_id, token in tokenizer.get_added_tokens_decoder().items() if token.special}
    lengths = np.zeros(tokenizer.get_vocab_size(with_added_tokens=True), dtype=np.int64)
    for token_id in range(len(lengths)):
        token = tokenizer.id_to_token(token_id)
        if token is None or token_id in special:
            continue  # special tokens (eot) separate documents; they are not text
        lengths[token_id] = byte_level_length(token) if byte_level else char_token_length(token)
    return lengths


def byte_level_length(token: str) -> int:
    """Each character of a byte-level token is exactly one byte (a KeyError means a foreign vocabulary)."""
    table = unicode_to_byte()
    return len(bytes(table[character] for character in token))


def char_token_length(token: str) -> int:
    """A byte-fallback token is one raw byte; any other token is its own text."""
    return 1 if BYTE_TOKEN.fullmatch(token) else len(token.encode("utf-8"))


def load_tokenizer(folder: Path | str) -> tuple[Tokenizer, dict[str, Any]]:
    """The tokenizer and its meta ({"type", "vocab_size", "eot_id"}) from a `tokenizer` step's artifact folder."""
    folder = Path(folder)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    return tokenizer, meta
