"""Read a cheap sample of every data file a recipe names, so data mistakes stop `validate` and `plan` (exit 2);
and check every regex op with the engine that will run it (llmrecipe/data/patterns.py).

A missing key, a label the recipe does not list, an empty file, an SFT step pointed at a classification file or
a multiple-choice file without its keys would otherwise pass `validate` and fail the step at run time, after the
upstream steps have spent their compute. Each check here runs the same function the step runs on every row, on the
first `SAMPLE_ROWS` rows (a table's header or a Parquet file's schema), so a mistake has one message; what a sample
cannot show (a label first seen at row 90,000) still fails the step with that message. Every problem is prefixed
by the recipe key that names the file. No torch, and no polars unless a Parquet source or a regex op is named.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from itertools import islice
from pathlib import Path
from typing import Callable

from llmrecipe.data.formats import file_format, missing_column, split_compression
from llmrecipe.data.patterns import pattern_problem
from llmrecipe.data.remote import open_binary
from llmrecipe.errors import RecipeError, StepError
from llmrecipe.evals.bias_data import read_pairs, read_questions
from llmrecipe.evals.jsonl import check_choices, read_jsonl, required_keys, suite_key
from llmrecipe.finetune.chat_data import conversation, row_split
from llmrecipe.finetune.classify_data import Fields, foreign_labels, labelled_rows, unknown_labels
from llmrecipe.finetune.preference_data import check_sample
from llmrecipe.jsonl import json_objects
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import DataStep, Source
from llmrecipe.recipe.evaluate import SUITES_WITH_DATA, EvaluateStep
from llmrecipe.recipe.finetune import FinetuneStep
from llmrecipe.recipe.recipe import Recipe

SAMPLE_ROWS = 500
"""Rows read from each JSONL file; enough to see every key a file has, cheap next to hashing the file."""
SAMPLE_BYTES = 1 << 20
"""Bytes read from a source file to sample its rows or see that it holds no text."""


def check_data_samples(recipe: Recipe, files: dict[str, list[ExternalFile]]) -> None:
    """Raise a RecipeError listing every data-content problem that a sample of the named files shows."""
    problems: list[str] = []
    for name, step in recipe.steps.items():
        checks: list[tuple[str, Callable[[], None]]] = []
        if isinstance(step, DataStep):
            checks = source_checks(name, step, files.get(name, []))
        elif isinstance(step, FinetuneStep) and step.dataset is not None and files.get(name):
            checks = [(f"steps.{name}.dataset.path", lambda n=name, s=step: dataset_check(n, s, Path(files[n][0].path)))]
        elif isinstance(step, EvaluateStep):
            checks = suite_checks(name, step, recipe, files.get(name, []))
        for key, check in checks:
            try:
                check()
            except StepError as error:
                problems.append(f"{key}: {error}")
    if problems:
        raise RecipeError(problems)


# --- data steps -----------------------------------------------------------------------------------------------


def source_checks(name: str, step: DataStep, files: list[ExternalFile]) -> list[tuple[str, Callable[[], None]]]:
    checks = [(f"steps.{name}.ops[{index}].pattern", lambda p=op.pattern: check_pattern(p))
              for index, op in enumerate(step.ops) if isinstance(getattr(op, "pattern", None), str)]
    for index, source in enumerate(step.sources):
        mine = [f for f in files if f.source == index and Path(f.path).is_file()]
        if source.url is None and mine:
            checks.append((f"steps.{name}.sources[{index}]", lambda s=source, m=mine: source_check(s, m)))
    return checks


def check_pattern(pattern: str) -> None:
    problem = pattern_problem(pattern)
    if problem:
        raise StepError(problem)


def source_check(source: Source, files: list[ExternalFile]) -> None:
    if all(f.size == 0 for f in files):
        names = ", ".join(f.name for f in files[:3]) + (", ..." if len(files) > 3 else "")
        which = f"the file it names ({names}) is" if len(files) == 1 else f"all {len(files)} files it names ({names}) are"
        raise StepError(f"{which} empty (0 bytes): the source has no documents")
    file = next(f for f in files if f.size)
    fmt = file_format(source.format, file.name)
    if fmt == "text":
        sample = head(file)
        if len(files) == 1 and sample is not None and not sample.strip():
            raise StepError(f"{file.name} holds only whitespace in its first {SAMPLE_BYTES:,} bytes: no text")
        return
    columns = sample_columns(file, fmt)
    if columns is not None and source.text_field not in columns:
        raise StepError(missing_column(file.name, source.text_field, columns) + f" (text_field = '{source.text_field}')")


def head(file: ExternalFile) -> bytes | None:
    """The first SAMPLE_BYTES of the file, decompressed when it is gzip; None when it is not sampled (zstd, or a
    file that does not decompress: the step handles those by its `on_bad_record` rule)."""
    _, compression = split_compression(file.name)
    if compression == "zstd":
        return None
    try:
        with open_binary(file.path) as raw, (gzip.GzipFile(fileobj=raw) if compression == "gzip" else raw) as stream:
            return stream.read(SAMPLE_BYTES)
    except (OSError, EOFError):
        return None


def sample_columns(file: ExternalFile, fmt: str) -> list[str] | None:
    """The column names a table file shows in its sample (None: not sampled)."""
    if fmt == "parquet":
        import polars as pl  # only a recipe that names a Parquet file pays for the import

        try:
            with open_binary(file.path) as stream:
                return list(pl.read_parquet_schema(stream))
        except (pl.exceptions.PolarsError, OSError):  # a malformed file: the step's on_bad_record rule decides
            return None
    sample = head(file)
    if sample is None:
        return None
    lines = sample.decode("utf-8", errors="replace").splitlines()
    if fmt == "csv":
        return next(csv.reader(io.StringIO("\n".join(lines[:1]))), [])
    keys: dict[str, None] = {}
    for line in lines[:-1] if len(lines) > 1 else lines:  # the last line of a sample may be cut
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # the step reports malformed lines by its on_bad_record rule
        if isinstance(row, dict):
            keys.update(dict.fromkeys(row))
    return list(keys)


# --- finetune datasets ---------------------------------------------------------------------------------------


def dataset_check(name: str, step: FinetuneStep, path: Path) -> None:
    key = f"steps.{name}.dataset"
    dataset = step.dataset
    if step.task == "sft":
        rows = list(islice(json_objects(path), SAMPLE_ROWS))
        if not rows:
            raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines)")
        for number, row in rows:
            row_split(row, dataset, path.name, number)
            conversation(row, dataset, path.name, number, key)
    elif step.task == "preference":
        check_sample(path, dataset, SAMPLE_ROWS, key)
    elif step.task == "classify":
        fields = Fields(dataset.text_field, dataset.label_field, dataset.split_field, key)
        examples = [example for example, _ in labelled_rows(path, fields, SAMPLE_ROWS)]
        if not examples:
            raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines)")
        problem = unknown_labels({e.label for e in examples}, step.labels) if step.labels else None
        if problem:
            raise StepError(f"{problem} (labels = {step.labels}); fix the data or the recipe's `labels`")


# --- evaluation suites ---------------------------------------------------------------------------------------


def suite_checks(name: str, step: EvaluateStep, recipe: Recipe,
                 files: list[ExternalFile]) -> list[tuple[str, Callable[[], None]]]:
    by_position = {f.source: Path(f.path) for f in files}
    checks = []
    for index, (suite_name, suite) in enumerate(step.named_suites().items()):
        if index not in by_position:
            continue
        key = suite_key(name, suite_name)
        where = f"{key}.{SUITES_WITH_DATA[suite.type]}"
        checks.append((where, lambda s=suite, k=key, p=by_position[index]: suite_check(s, k, p, classes(recipe, step))))
    return checks


def classes(recipe: Recipe, step: EvaluateStep) -> list[str] | None:
    """The evaluated classifier's labels when its recipe lists them (else they are known only once it has run)."""
    model = recipe.steps.get(step.model)
    return model.labels if isinstance(model, FinetuneStep) and model.task == "classify" else None


def suite_check(suite, key: str, path: Path, labels: list[str] | None) -> None:
    if suite.type == "perplexity":
        with open(path, "rb") as file:
            sample = file.read(SAMPLE_BYTES)  # the start is enough to see text, whatever the file's size
        if not sample.strip():
            raise StepError(f"{path.name} has no text: the file is empty (or only whitespace)")
    elif suite.type == "classification":
        fields = Fields(suite.text_field, suite.label_field, suite.split_field, key)
        examples = [example for example, _ in labelled_rows(path, fields, SAMPLE_ROWS)]
        if not examples:
            raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines)")
        problem = foreign_labels({e.label for e in examples}, labels, path.name, key) if labels else None
        if problem:
            raise StepError(problem)
    elif suite.type == "bias":
        read_questions(path, suite, key, SAMPLE_ROWS)
    elif suite.type == "bias_pairs":
        read_pairs(path, suite, key, SAMPLE_ROWS)
    else:
        rows = read_jsonl(path, *required_keys(suite, key), limit=SAMPLE_ROWS)
        if suite.type == "multiple_choice":
            check_choices(rows, path.name)
