"""The implicit `tokenize` step: each split of a data step, encoded with a trained tokenizer, as flat token files.

Outputs: `train.bin`, `val.bin`, `test.bin` hold raw little-endian ids of `spec.dtype`, each document's ids
followed by the eot id, documents in file order; `meta.json` holds the dtype, eot id, vocabulary size and
per-split counts. Texts are read and encoded in batches, so a split never sits in memory as one Python list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl
from tokenizers import Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.plan.specs import TokenizeSpec
from llmrecipe.run.context import Progress, StepContext
from llmrecipe.tokenizer.bytes import load_tokenizer

SPLITS = ("train", "val", "test")
BATCH_DOCUMENTS = 1024
"""Documents per `encode_batch` call: large enough to keep both cores busy, small enough to bound memory."""


def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    tokenize = TokenizeSpec.model_validate(spec)
    tokenizer, tokenizer_meta = load_tokenizer(ctx.inputs["tokenizer"])
    eot_id = checked_eot_id(tokenizer, tokenizer_meta, tokenize)
    check_dtype_fits(tokenizer_meta["vocab_size"], tokenize.dtype)
    # Text that happens to contain the eot string stays text: only the separators written here are eot ids.
    tokenizer.encode_special_tokens = True
    paths = {split: split_path(ctx.inputs["data"], split) for split in SPLITS}
    progress = ctx.progress(sum(count_documents(path) for path in paths.values()), "docs")
    splits = {}
    for split, path in paths.items():
        splits[split] = write_split(tokenizer, path, ctx.out_dir / f"{split}.bin", eot_id, tokenize.dtype, progress)
    progress.close()
    meta = {"dtype": tokenize.dtype, "eot_id": eot_id, "vocab_size": tokenizer_meta["vocab_size"], "splits": splits}
    (ctx.out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    train = splits["train"]
    ctx.log(f"{train['tokens']} train tokens, {bytes_per_token(train):.3f} bytes per token")
    return {
        **{f"{split}_tokens": splits[split]["tokens"] for split in SPLITS},
        "bytes_per_token": bytes_per_token(train),
    }


def checked_eot_id(tokenizer: Tokenizer, meta: dict[str, Any], spec: TokenizeSpec) -> int:
    """The eot id, after checking that the tokenizer artifact agrees with the spec and with itself."""
    token_id = tokenizer.token_to_id(spec.eot_token)
    if token_id is None or token_id != meta["eot_id"]:
        raise StepError(
            f"the tokenizer artifact does not match the plan: eot token {spec.eot_token!r} has id {token_id}, "
            f"its meta.json says {meta['eot_id']}; delete the tokenizer step's stored folder and run again"
        )
    return token_id


def check_dtype_fits(vocab_size: int, dtype: str) -> None:
    """Ids run from 0 to vocab_size - 1; the largest must fit the token file's integer type."""
    largest = np.iinfo(np.dtype(dtype)).max
    if vocab_size - 1 > largest:
        raise StepError(
            f"the tokenizer has {vocab_size} ids but token files of dtype {dtype} hold ids up to {largest}; "
            f"lower the tokenizer's vocab_size to {largest + 1} or less"
        )


def split_path(data_dir: Path, split: str) -> Path:
    path = data_dir / f"{split}.parquet"
    if not path.is_file():
        raise StepError(f"the data step's artifact has no {path.name} (looked in {data_dir}); run the data step again")
    return path


def count_documents(path: Path) -> int:
    """Rows of a parquet file, read from its footer without loading the texts."""
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def text_batches(path: Path, batch_size: int) -> Iterator[pl.Series]:
    """The `text` column of a parquet file, in order, a batch of rows at a time (polars' streaming engine)."""
    for frame in pl.scan_parquet(path).select("text").collect_batches(chunk_size=batch_size):
        texts = frame.get_column("text")
        if texts.null_count():
            raise StepError(f"{path.name} has {texts.null_count()} null texts; the data step must write strings")
        yield texts


def write_split(
    tokenizer: Tokenizer, source: Path, target: Path, eot_id: int, dtype: str, progress: Progress
) -> dict[str, int]:
    """Encode one split into `target`; return its document, token and UTF-8 byte counts."""
    counts = {"documents": 0, "tokens": 0, "bytes": 0}
    with target.open("wb") as out:
        for texts in text_batches(source, BATCH_DOCUMENTS):
            counts["tokens"] += write_batch(tokenizer, texts.to_list(), out, eot_id, dtype)
            counts["documents"] += len(texts)
            counts["bytes"] += int(texts.str.len_bytes().sum())
            progress.advance(len(texts))
    return counts


def write_batch(tokenizer: Tokenizer, texts: list[str], out: BinaryIO, eot_id: int, dtype: str) -> int:
    """Append each text's ids and an eot id to `out`; return how many ids were written."""
    encodings = tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = list(chain.from_iterable(chain(encoding.ids, (eot_id,)) for encoding in encodings))
    # "<" pins little-endian whatever the machine, so token files are the same bytes everywhere.
    np.asarray(ids, dtype=np.dtype(dtype).newbyteorder("<")).tofile(out)
    return len(ids)


def bytes_per_token(split: dict[str, int]) -> float:
    """UTF-8 bytes of text per id written (eot separators included); 0.0 for an empty split."""
    return split["bytes"] / split["tokens"] if split["tokens"] else 0.0
