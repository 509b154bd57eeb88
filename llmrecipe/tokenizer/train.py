"""Train lossless tokenizers in-process: byte-level BPE (GPT-2 style) and one token per character.

Both are plain Hugging Face `tokenizers.Tokenizer` objects, so `tokenizer.json` loads anywhere
(`Tokenizer.from_file`, transformers' `PreTrainedTokenizerFast`). Both are lossless for every Unicode
string: `decode(encode(text).ids, skip_special_tokens=False) == text`. That is why neither has a
normalizer: normalization belongs in the data step, where it is visible and fingerprinted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

BYTE_COUNT = 256
"""Both tokenizers carry one token per byte value, so any string can be encoded."""


def byte_token(value: int) -> str:
    """The name byte-fallback BPE gives the token of one raw byte (the format `decoders.ByteFallback` reads)."""
    return f"<0x{value:02X}>"


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int, eot_token: str) -> Tokenizer:
    """Byte-level BPE: 256 byte tokens, then merges learned from `texts`, plus `eot_token` as a special token."""
    check_room_for_bytes(vocab_size, eot_token)
    tokenizer = Tokenizer(models.BPE())  # no unk token, no dropout: every byte has a token, encoding is exact
    # add_prefix_space=True would invent a space at the start of every text and break round trips.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        # Without the full alphabet, bytes absent from the training texts would have no token at all.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[eot_token],
        show_progress=False,  # a terminal bar would garble the run's log lines
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    check_vocab_bound(tokenizer, vocab_size)
    return tokenizer


def train_char(texts: Iterable[str], vocab_size: int, min_frequency: int, eot_token: str) -> Tokenizer:
    """One token per character: the most frequent characters of `texts`; any other character is spelled in bytes.

    Built as a BPE model without merges, so every character (Unicode code point) is looked up on its own.
    `byte_fallback=True` encodes a character missing from the vocabulary as its UTF-8 bytes `<0xNN>`, and the
    decoder (`ByteFallback` then `Fuse`) turns runs of byte tokens back into the character.
    """
    check_room_for_bytes(vocab_size, eot_token)
    if eot_token in {byte_token(value) for value in range(BYTE_COUNT)}:
        raise ValueError(f"eot_token {eot_token!r} is the name of a byte token; pick another, e.g. '<|endoftext|>'")
    characters = frequent_characters(texts, min_frequency, limit=vocab_size - 1 - BYTE_COUNT, exclude=eot_token)
    vocab = {eot_token: 0}
    vocab.update({byte_token(value): 1 + value for value in range(BYTE_COUNT)})
    vocab.update({character: 1 + BYTE_COUNT + index for index, character in enumerate(characters)})
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    # No pre-tokenizer: the whole text is one "word" split into characters, so spaces and newlines are
    # ordinary characters. Metaspace would rewrite spaces as "▁" (and may prepend one), and ByteLevel would
    # turn characters into bytes; either breaks "one token per character" or the round trip.
    tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tokenizer.add_special_tokens([AddedToken(eot_token, special=True, normalized=False)])
    check_vocab_bound(tokenizer, vocab_size)
    return tokenizer


def frequent_characters(texts: Iterable[str], min_frequency: int, limit: int, exclude: str) -> list[str]:
    """Characters seen at least `min_frequency` times, most frequent first (ties by code point, for stable ids)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(text)
    counts.pop(exclude, None)  # a one-character eot token is already in the vocabulary as the special token
    kept = [(count, character) for character, count in counts.items() if count >= min_frequency]
    kept.sort(key=lambda pair: (-pair[0], pair[1]))
    return [character for _, character in kept[: max(limit, 0)]]


def check_room_for_bytes(vocab_size: int, eot_token: str) -> None:
    """Both tokenizers need one id per byte value plus the eot token, or some strings could not be encoded."""
    if not eot_token:
        raise ValueError("eot_token is empty; set it to a string such as '<|endoftext|>'")
    needed = BYTE_COUNT + 1
    if vocab_size < needed:
        raise ValueError(
            f"vocab_size = {vocab_size} is too small: a lossless tokenizer needs {BYTE_COUNT} byte tokens "
            f"plus the eot token {eot_token!r}, so set vocab_size to at least {needed}"
        )


def check_vocab_bound(tokenizer: Tokenizer, vocab_size: int) -> None:
    """The model's embedding is sized from the declared vocab_size, so no id may reach it."""
    actual = tokenizer.get_vocab_size(with_added_tokens=True)
    if actual > vocab_size:
        raise ValueError(f"the trained tokenizer has {actual} ids, more than vocab_size = {vocab_size}")
