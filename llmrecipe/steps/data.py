"""The `data` step: read every source, apply the ops in order, split, write train/val/test Parquet files.

Outputs in ctx.out_dir: train.parquet, val.parquet, test.parquet (always all three, columns id, text,
source) and stats.json (documents and characters per source, per op and per split).
"""

from __future__ import annotations

import json
from typing import Any

import polars as pl

from llmrecipe.data.ops import OPS
from llmrecipe.data.read import empty_documents, read_source
from llmrecipe.data.split import assign_splits
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.plan.specs import DataSpec
from llmrecipe.recipe.data import DataOp, Split
from llmrecipe.run.context import StepContext


def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = DataSpec.model_validate(spec)
    documents, source_stats = read_all(spec, ctx)
    kept, op_stats = apply_ops(documents, spec.ops, ctx)
    splits = assign_splits(kept, spec.split)
    check_splits(splits, spec.split, len(kept))
    for name, frame in splits.items():
        frame.write_parquet(ctx.out_dir / f"{name}.parquet")
    split_stats = {name: size(frame) for name, frame in splits.items()}
    stats = {"sources": source_stats, "ops": op_stats, "splits": split_stats}
    (ctx.out_dir / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return {
        "documents": len(documents),
        "kept": len(kept),
        **{f"{name}_docs": len(frame) for name, frame in splits.items()},
        "train_chars": split_stats["train"]["chars"],
    }


def size(frame: pl.DataFrame) -> dict[str, int]:
    return {"docs": len(frame), "chars": int(frame["text"].str.len_chars().sum())}


def read_all(spec: DataSpec, ctx: StepContext) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """All sources concatenated in order, and how many documents and characters each one gave."""
    files = files_by_source(ctx.external, len(spec.sources))
    frames, stats = [], []
    for index, source in enumerate(spec.sources):
        frame = read_source(source, index, files[index])
        frames.append(frame)
        stats.append({"source": index, "files": len(files[index]), **size(frame)})
        ctx.log(f"sources[{index}]: {len(frame)} documents from {len(files[index])} files")
    documents = pl.concat([empty_documents(), *frames], how="vertical")
    if documents.is_empty():
        raise StepError(
            f"the sources gave no documents ({sum(len(f) for f in files)} files read); check that the files "
            "hold text and that `unit` and `text_field` fit them"
        )
    return documents, stats


def files_by_source(external: list[ExternalFile], n_sources: int) -> list[list[ExternalFile]]:
    """The step's external files grouped by source index, each group in the order the plan listed it."""
    groups: list[list[ExternalFile]] = [[] for _ in range(n_sources)]
    for file in external:
        if not 0 <= file.source < n_sources:
            raise StepError(f"file {file.path} belongs to source {file.source}, but the step has {n_sources}; re-plan")
        groups[file.source].append(file)
    return groups


def apply_ops(
    documents: pl.DataFrame, ops: list[DataOp], ctx: StepContext
) -> tuple[pl.DataFrame, list[dict[str, Any]]]:
    """The documents after every op in order, and for each op what went in, what came out, what was dropped."""
    stats = []
    for index, op in enumerate(ops):
        before = size(documents)
        documents = OPS[op.op](documents, op)
        after = size(documents)
        dropped = before["docs"] - after["docs"]
        stats.append(
            {"op": op.op, "index": index, "docs_in": before["docs"], "docs_out": after["docs"],
             "chars_in": before["chars"], "chars_out": after["chars"], "dropped": dropped}
        )
        ctx.log(f"ops[{index}] {op.op}: {before['docs']} -> {after['docs']} documents ({dropped} dropped), "
                f"{before['chars']} -> {after['chars']} characters")
        if documents.is_empty():
            raise StepError(f"ops[{index}] {op.op} removed the last {before['docs']} documents; {loosen_hint(op.op)}")
    return documents, stats


def loosen_hint(op_name: str) -> str:
    if op_name == "filter_length":
        return "loosen its thresholds (min_chars, max_chars, min_words)"
    return "check the documents it receives (are they all empty?) or remove the op"


def check_splits(splits: dict[str, pl.DataFrame], split: Split, kept: int) -> None:
    """Every split that was asked for (fraction > 0; train always is) must get at least one document."""
    fractions = {"train": 1.0 - split.val - split.test, "val": split.val, "test": split.test}
    for name, fraction in fractions.items():
        if fraction > 0 and splits[name].is_empty():
            larger = "smaller split.val and split.test" if name == "train" else f"a larger split.{name}"
            raise StepError(
                f"split '{name}' (fraction {fraction:g}) got none of the {kept} documents: each document's text "
                f"decides its split, so few documents split unevenly; use more or smaller documents "
                f"(e.g. unit = \"paragraph\" on a source) or {larger}"
            )
