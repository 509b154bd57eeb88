"""The `data` step: read every source, apply the ops in order, split, write train/val/test Parquet files.

Outputs in ctx.out_dir:
- train.parquet, val.parquet, test.parquet: always all three, columns id, text, source, then the sources'
  metadata columns (as strings);
- stats.json: per source (files, documents and characters read, kept and their shares, bad records, repairs:
  a mix that cleaning reshaped shows here), per stage (documents and characters in
  and out, dropped by reason, counters), totals that reconcile (in = kept + dropped), per split, the
  split-mismatch report, and a sample of dropped documents per reason;
- dropped.parquet: every dropped document's id, stage, reason, and for duplicates the id kept instead.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import polars as pl

from llmrecipe.data.pipeline import Outcome, Pipeline
from llmrecipe.errors import StepError
from llmrecipe.plan.specs import DataSpec
from llmrecipe.recipe.data import Split
from llmrecipe.run.context import StepContext


def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = DataSpec.model_validate(spec)
    pipeline = Pipeline(spec, ctx.external, ctx.scratch_dir / "work", ctx.downloads_dir, ctx.log)
    outcome = pipeline.run(ctx.out_dir)
    stats = statistics(outcome, kept_by_source(ctx.out_dir))
    (ctx.out_dir / "stats.json").write_text(json.dumps(stats, indent=2, ensure_ascii=False) + "\n")
    for source in stats["sources"]:
        ctx.log(f"sources[{source['source']}]: kept {source['kept_docs']} of {source['docs']} documents "
                f"({source['kept_docs_share']:.0%}), {source['kept_chars']:,} of {source['chars']:,} characters "
                f"({source['kept_chars_share']:.0%})")
    for stage in stats["stages"]:
        ctx.log(f"{stage['stage']}: {stage['docs_in']} -> {stage['docs_out']} documents"
                + "".join(f", {n} {reason}" for reason, n in stage["dropped"].items()))
    for name in ("val", "test"):
        for warning in stats["mismatch"][name]["warnings"]:
            ctx.log(f"warning: {name} does not look like train: {warning}")
            ctx.event({"event": "warning", "message": f"{name} split: {warning}"})
    check_splits(outcome.split_docs, spec.split, stats["totals"]["kept"])
    return metrics(stats)


def kept_by_source(out_dir: Path) -> dict[int, tuple[int, int]]:
    """Source index -> (documents, characters) in the written splits."""
    splits = pl.scan_parquet([out_dir / f"{name}.parquet" for name in ("train", "val", "test")])
    counts = splits.group_by("source").agg(docs=pl.len(), chars=pl.col("text").str.len_chars().sum()).collect()
    return {source: (int(docs), int(chars or 0)) for source, docs, chars in counts.iter_rows()}


def with_kept(source: dict[str, Any], kept: tuple[int, int]) -> dict[str, Any]:
    docs, chars = kept
    return {**source, "kept_docs": docs, "kept_chars": chars,
            "kept_docs_share": round(docs / source["docs"], 4) if source["docs"] else 0.0,
            "kept_chars_share": round(chars / source["chars"], 4) if source["chars"] else 0.0}


def statistics(outcome: Outcome, kept_per_source: dict[int, tuple[int, int]]) -> dict[str, Any]:
    stages = [stage.as_dict() for stage in outcome.ledger.stages]
    docs_in = sum(source.docs for source in outcome.sources)
    dropped: Counter = Counter()
    for stage in stages:
        dropped.update({f"{stage['stage']}: {reason}": n for reason, n in stage["dropped"].items()})
    kept = sum(outcome.split_docs.values())
    if docs_in != kept + sum(dropped.values()):  # a bug in the accounting, never a user mistake
        raise RuntimeError(f"accounting does not reconcile: {docs_in} in, {kept} kept, {sum(dropped.values())} dropped")
    return {
        "sources": [with_kept(source.as_dict(), kept_per_source.get(source.source, (0, 0))) for source in outcome.sources],
        "stages": stages,
        "totals": {"docs_in": docs_in, "kept": kept, "dropped": sum(dropped.values()), "dropped_by_reason": dict(dropped)},
        "splits": {name: {"docs": outcome.split_docs[name], "chars": outcome.split_chars[name]} for name in outcome.split_docs},
        "mismatch": outcome.mismatch,
        "dropped_samples": outcome.ledger.samples,
    }


def metrics(stats: dict[str, Any]) -> dict[str, Any]:
    """Scalars for the run report: documents in and kept, per split, and what each stage dropped."""
    found: dict[str, Any] = {"documents": stats["totals"]["docs_in"], "kept": stats["totals"]["kept"]}
    found.update({f"{name}_docs": split["docs"] for name, split in stats["splits"].items()})
    found["train_chars"] = stats["splits"]["train"]["chars"]
    found["bad_records"] = sum(sum(s["bad_records"].values()) for s in stats["sources"])
    for stage in stats["stages"]:
        found[f"dropped {stage['stage']}"] = sum(stage["dropped"].values())
    found["mismatch_warnings"] = sum(len(stats["mismatch"][name]["warnings"]) for name in ("val", "test"))
    return found


def check_splits(split_docs: dict[str, int], split: Split, kept: int) -> None:
    """Every split that was asked for (fraction > 0; train always is) must get at least one document."""
    fractions = {"train": 1.0 - split.val - split.test, "val": split.val, "test": split.test}
    for name, fraction in fractions.items():
        if fraction > 0 and not split_docs[name]:
            larger = "smaller split.val and split.test" if name == "train" else f"a larger split.{name}"
            raise StepError(
                f"split '{name}' (fraction {fraction:g}) got none of the {kept} documents: each document's text "
                f"decides its split, so few documents split unevenly; use more or smaller documents "
                f"(e.g. unit = \"paragraph\" on a source) or {larger}"
            )
