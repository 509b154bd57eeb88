"""Text-to-text examples for encoder-decoders: JSONL rows with an input text and an output text (by default the
`prompt` and `response` fields), split like chat data, encoded with end-of-text closing both sides."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.finetune.chat_data import read_rows
from llmrecipe.recipe.finetune import DatasetConfig


@dataclass
class Pair:
    inputs: list[int]
    """The encoder's ids: the input text, then end-of-text."""
    targets: list[int]
    """The decoder's targets: the output text, then end-of-text."""


def load_pairs(path: Path, dataset: DatasetConfig, tokenizer: Tokenizer, eos_id: int,
               max_len: int) -> tuple[dict[str, list[Pair]], int]:
    """Train and validation pairs (the test split is left out), each side cut to `max_len` ids; and how many sides
    were cut. A row without the two string fields fails here, naming its line and the fields it has."""
    splits = read_rows(path, dataset)
    pairs: dict[str, list[Pair]] = {}
    truncated = 0
    for split in ("train", "val"):
        texts = []
        for number, row in splits[split]:
            missing = [f for f in (dataset.prompt_field, dataset.response_field) if not isinstance(row.get(f), str)]
            if missing:
                raise StepError(f"{path.name} line {number}: no string field {' or '.join(map(repr, missing))}; the "
                                f"row has {sorted(row)}. Set dataset.prompt_field / dataset.response_field to the "
                                "names the data uses")
            texts.append((row[dataset.prompt_field], row[dataset.response_field]))
        inputs = tokenizer.encode_batch([t[0] for t in texts], add_special_tokens=False)
        outputs = tokenizer.encode_batch([t[1] for t in texts], add_special_tokens=False)
        pairs[split] = []
        for source, target in zip(inputs, outputs):
            truncated += (len(source.ids) >= max_len) + (len(target.ids) >= max_len)
            pairs[split].append(Pair(source.ids[: max_len - 1] + [eos_id], target.ids[: max_len - 1] + [eos_id]))
    if not pairs["train"]:
        raise StepError(f"{path.name} has no training rows; add rows (or fewer held out: dataset.val_fraction)")
    return pairs, truncated
