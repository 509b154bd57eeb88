"""Data-content mistakes exit 2 at `validate`, naming the recipe key and the file, before any step runs.

Each case is a recipe fragment (appended to a valid tiny recipe: corpus -> tok -> base) and the data files it
names; `validate` reads a sample of every file (llmrecipe/preflight.py). The runtime check of one case shows the
message is the one the step itself gives for what a sample cannot see.
"""

from __future__ import annotations

import json

import pytest

from llmrecipe.cli import main
from llmrecipe.errors import StepError
from llmrecipe.finetune.classify_data import Fields, label_set, read_splits
from tests.conftest import write_tiny_recipe


def jsonl(*rows: dict) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


PAIRS = jsonl(*({"prompt": f"count to {n}", "response": " ".join(map(str, range(1, n + 1)))} for n in range(1, 7)))
LABELLED = jsonl(*({"text": f"the {w} speaks", "label": w, "split": s}
                   for w in ("castle", "sea") for s in ("train", "train", "test")))
MC = jsonl({"context": "The sky is", "choices": ["blue", "loud"], "answer": 0})


def finetune(task: str, path: str, extra: str = "") -> str:
    return (f'\n[steps.ft]\nkind = "finetune"\ninit = "base"\ntask = "{task}"\nbudget = {{ steps = 20 }}\n'
            f'dataset = {{ path = "{path}"{extra} }}\n')


def suite(kind: str, path: str, extra: str = "", model: str = "base") -> str:
    return (f'\n[steps.check]\nkind = "evaluate"\nmodel = "{model}"\n'
            f'[steps.check.suites.test]\ntype = "{kind}"\ndata = "{path}"\n{extra}\n')


CLASSIFIER = finetune("classify", "labelled.jsonl")

CASES = {
    # data step sources
    "jsonl-source-without-text-field": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "docs.jsonl" }]\n', {"docs.jsonl": jsonl({"body": "hi"})},
        ["steps.extra.sources[0]", "docs.jsonl has no column 'text' (it has: body)"]),
    "csv-source-without-text-field": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "docs.csv", text_field = "content" }]\n',
        {"docs.csv": "id,body\n1,hello\n"}, ["steps.extra.sources[0]", "docs.csv has no column 'content'"]),
    "empty-source-file": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "empty.txt" }]\n', {"empty.txt": ""},
        ["steps.extra.sources[0]: the file it names (empty.txt) is empty (0 bytes): the source has no documents"]),
    "whitespace-only-source": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "blank.txt" }]\n', {"blank.txt": "\n\n   \n"},
        ["steps.extra.sources[0]", "blank.txt holds only whitespace"]),
    # regex ops, judged by polars' engine, which runs them
    "regex-look-ahead": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "corpus" }]\n'
        'ops = [{ op = "normalize" }, { op = "regex_filter", pattern = "(?=king)k" }]\n', {},
        ["steps.extra.ops[1].pattern", "look-around, including look-ahead and look-behind, is not supported",
         "Rust's `regex` syntax"]),
    "regex-backreference": (
        '\n[steps.extra]\nkind = "data"\nsources = [{ path = "corpus" }]\n'
        'ops = [{ op = "regex_replace", pattern = "(a)\\\\1", replacement = "" }]\n', {},
        ["steps.extra.ops[0].pattern", "backreferences are not supported"]),
    # sft datasets
    "sft-missing-response-field": (
        finetune("sft", "pairs.jsonl", ', response_field = "answer"'), {"pairs.jsonl": PAIRS},
        ["steps.ft.dataset.path", "pairs.jsonl line 1: no string field 'answer'", "steps.ft.dataset.response_field"]),
    "sft-on-a-classification-file": (
        finetune("sft", "labelled.jsonl"), {"labelled.jsonl": LABELLED},
        ["steps.ft.dataset.path", "labelled.jsonl line 1", "it looks like a classification file", 'task = "classify"']),
    "sft-empty-file": (
        finetune("sft", "pairs.jsonl"), {"pairs.jsonl": "\n"},
        ["steps.ft.dataset.path", "pairs.jsonl has no rows: the file is empty"]),
    "sft-bad-split-value": (
        finetune("sft", "pairs.jsonl"), {"pairs.jsonl": jsonl({"prompt": "a", "response": "b", "split": "dev"})},
        ["steps.ft.dataset.path", "pairs.jsonl line 1: split = 'dev'"]),
    # classify datasets
    "classify-missing-label-field": (
        finetune("classify", "labelled.jsonl", ', label_field = "sentiment"'), {"labelled.jsonl": LABELLED},
        ["steps.ft.dataset.path", "labelled.jsonl line 1: no usable 'sentiment' field",
         "steps.ft.dataset.label_field = 'sentiment'"]),
    "classify-missing-text-field": (
        finetune("classify", "labelled.jsonl", ', text_field = "review"'), {"labelled.jsonl": LABELLED},
        ["labelled.jsonl line 1: no usable 'review' field", "steps.ft.dataset.text_field"]),
    "classify-labels-do-not-match": (
        finetune("classify", "labelled.jsonl") + 'labels = ["castle", "river"]\n', {"labelled.jsonl": LABELLED},
        ["steps.ft.dataset.path", "the data has labels ['sea'] that `labels` does not list"]),
    "classify-empty-file": (
        finetune("classify", "labelled.jsonl"), {"labelled.jsonl": ""},
        ["steps.ft.dataset.path", "labelled.jsonl has no rows: the file is empty"]),
    # evaluation suites
    "multiple-choice-without-its-keys": (
        suite("multiple_choice", "mc.jsonl"), {"mc.jsonl": jsonl({"question": "The sky is", "options": ["a", "b"]})},
        ["steps.check.suites.test.data", "mc.jsonl line 1: needs key 'context'",
         "a multiple_choice file has 'context', 'choices' (a list) and 'answer'"]),
    "multiple-choice-answer-out-of-range": (
        suite("multiple_choice", "mc.jsonl"), {"mc.jsonl": jsonl({"context": "x", "choices": ["a", "b"], "answer": 2})},
        ["steps.check.suites.test.data", "answer 2 is not an index into its 2 choices"]),
    "empty-suite-file": (
        suite("multiple_choice", "mc.jsonl"), {"mc.jsonl": ""},
        ["steps.check.suites.test.data", "mc.jsonl has no rows: the file is empty"]),
    "generation-missing-prompt-field": (
        suite("generation", "qa.jsonl", 'prompt_field = "question"'), {"qa.jsonl": PAIRS},
        ["steps.check.suites.test.data", "qa.jsonl line 1: needs key 'question'",
         "set steps.check.suites.test.prompt_field"]),
    "qa-missing-reference-field": (
        suite("qa_factuality", "qa.jsonl"), {"qa.jsonl": jsonl({"prompt": "Is it?", "answer": "Yes."})},
        ["steps.check.suites.test.data", "needs key 'response'"]),
    "classification-suite-wrong-label-field": (
        CLASSIFIER + suite("classification", "labelled.jsonl", 'label_field = "gold"', model="ft"),
        {"labelled.jsonl": LABELLED},
        ["steps.check.suites.test.data", "no usable 'gold' field", "steps.check.suites.test.label_field = 'gold'"]),
    "classification-suite-labels-the-model-lacks": (
        finetune("classify", "labelled.jsonl") + 'labels = ["castle", "sea"]\n'
        + suite("classification", "other.jsonl", model="ft"),
        {"labelled.jsonl": LABELLED, "other.jsonl": jsonl({"text": "a bird", "label": "sky"})},
        ["steps.check.suites.test.data", "labels ['sky'] are not among the model's classes ['castle', 'sea']"]),
    "perplexity-file-empty": (
        '\n[steps.check]\nkind = "evaluate"\nmodel = "base"\n[steps.check.suites.book]\ntype = "perplexity"\n'
        'file = "book.txt"\n', {"book.txt": "  \n"},
        ["steps.check.suites.book.file", "book.txt has no text"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_data_mistake_exits_2_at_validate_naming_the_key_and_the_file(tmp_path, case, capsys):
    extra, files, expected = CASES[case]
    recipe = write_tiny_recipe(tmp_path, extra=extra)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    code = main(["validate", str(recipe)])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert "Traceback" not in captured.err and captured.err.startswith("error: ")
    for text in expected:
        assert text in captured.err, captured.err
    assert not (tmp_path / "work").exists()  # nothing ran


@pytest.mark.parametrize("name", ["docs.parquet", "docs.jsonl.gz"])
def test_parquet_schemas_and_compressed_jsonl_are_sampled_too(tmp_path, name, capsys):
    import gzip

    import polars as pl

    if name.endswith(".parquet"):
        pl.DataFrame({"body": ["The king speaks."]}).write_parquet(tmp_path / name)
    else:
        (tmp_path / name).write_bytes(gzip.compress(jsonl({"body": "The king speaks."}).encode()))
    extra = f'\n[steps.extra]\nkind = "data"\nsources = [{{ path = "{name}" }}]\n'
    assert main(["validate", str(write_tiny_recipe(tmp_path, extra=extra))]) == 2
    assert f"steps.extra.sources[0]: {name} has no column 'text' (it has: body)" in capsys.readouterr().err


def test_the_cases_are_mistakes_only_in_their_data(tmp_path, capsys):
    """The same recipe fragments with good data validate, so each case fails for its data alone."""
    recipe = write_tiny_recipe(tmp_path, extra=CLASSIFIER + suite("classification", "labelled.jsonl", model="ft")
                               + finetune("sft", "pairs.jsonl").replace("steps.ft", "steps.chat"))
    (tmp_path / "labelled.jsonl").write_text(LABELLED)
    (tmp_path / "pairs.jsonl").write_text(PAIRS)
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err


def test_patterns_polars_runs_pass_even_where_pythons_re_would_refuse_them(tmp_path, capsys):
    extra = ('\n[steps.extra]\nkind = "data"\nsources = [{ path = "corpus" }]\n'
             'ops = [{ op = "regex_replace", pattern = "\\\\p{Lu}+", replacement = "X" }]\n')
    assert main(["validate", str(write_tiny_recipe(tmp_path, extra=extra))]) == 0, capsys.readouterr().err


def test_what_a_sample_cannot_see_fails_at_run_time_with_the_same_message(tmp_path):
    """A label first seen past the sampled rows: `validate` passes, the step's own check names it the same way."""
    rows = [{"text": f"row {i}", "label": "castle" if i % 2 else "sea"} for i in range(600)]
    rows.append({"text": "row 600", "label": "river"})
    path = tmp_path / "labelled.jsonl"
    path.write_text(jsonl(*rows))
    recipe = write_tiny_recipe(tmp_path, extra=finetune("classify", "labelled.jsonl") + 'labels = ["castle", "sea"]\n')
    assert main(["validate", str(recipe)]) == 0
    splits = read_splits(path, Fields(key="steps.ft.dataset"), 0.1)
    with pytest.raises(StepError, match=r"the data has labels \['river'\] that `labels` does not list"):
        label_set(splits["train"], splits["val"] + splits["test"], ["castle", "sea"])
