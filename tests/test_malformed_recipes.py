"""Hostile and mistaken recipes: every one exits 2 at `validate` with one line per problem, never a traceback,
and nothing in them runs code, allocates, or writes outside the workdir.

tests/malformed/ is the corpus: each case extends base.toml (a valid recipe) and says on `# expect:` lines what
its error must contain. The fuzz tests throw random `--set` values and random edits of the recipe text at load ->
compile: only RecipeError may come out.
"""

from __future__ import annotations

import shutil
import string
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.errors import RecipeError
from tests.conftest import make_corpus

CORPUS = Path(__file__).parent / "malformed"
CASES = sorted(p for p in CORPUS.glob("*.toml") if p.name != "base.toml")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("malformed")
    for path in CORPUS.glob("*.toml"):
        shutil.copy(path, folder / path.name)
    make_corpus(folder / "corpus", documents=3, sentences=3)
    return folder


def expectations(case: Path) -> list[str]:
    return [line.removeprefix("# expect:").strip() for line in case.read_text().splitlines()
            if line.startswith("# expect:")]


def test_the_base_recipe_is_valid(corpus, capsys):
    assert main(["validate", str(corpus / "base.toml")]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[case.stem for case in CASES])
def test_each_malformed_recipe_exits_2_with_one_line_naming_the_problem(corpus, case, capsys):
    assert expectations(case), f"{case.name} has no `# expect:` line"
    code = main(["validate", str(corpus / case.name)])
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = captured.err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    for expected in expectations(case):
        assert expected in captured.err, captured.err
    assert not (corpus / "work").exists()  # refused before anything was written


def test_locating_a_package_runs_none_of_its_code(tmp_path, monkeypatch, capsys):
    """`package = "spy.texts"` finds spy/texts/ without executing spy/__init__.py (or `this`, which prints)."""
    (tmp_path / "spy" / "texts").mkdir(parents=True)
    (tmp_path / "spy" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').close()\n")
    (tmp_path / "spy" / "texts" / "a.txt").write_text("Some text to read.\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('[steps.corpus]\nkind = "data"\nsources = [{ package = "spy.texts" }]\n')
    plan = api.compile(api.load(recipe), tmp_path / "work")
    assert [f.name for f in plan.step("corpus").external] == ["a.txt"]
    assert not (tmp_path / "ran").exists() and "spy" not in sys.modules
    recipe.write_text('[steps.corpus]\nkind = "data"\nsources = [{ package = "this.x" }]\n')
    with pytest.raises(RecipeError, match="no installed package"):
        api.compile(api.load(recipe), tmp_path / "work")
    assert "Zen of Python" not in capsys.readouterr().out and "this" not in sys.modules


# --- fuzz: only RecipeError may escape load -> compile ---------------------------------------------------------

KEYS = ["run.name", "run.seed", "run.nproc", "run.device", "run.workdir", "steps.base.model.n_layer",
        "steps.base.model.d_model", "steps.base.model.n_head", "steps.base.model.n_kv_head", "steps.base.model.seq_len",
        "steps.base.model.ffn_mult", "steps.base.model.arch", "steps.base.optim.lr", "steps.base.optim.warmup",
        "steps.base.optim.warmup_fraction", "steps.base.batch_size", "steps.base.batch_tokens",
        "steps.base.micro_batch_size", "steps.base.eval_batches", "steps.base.final_eval_batches",
        "steps.base.budget.steps", "steps.base.budget.tokens", "steps.base.budget.epochs", "steps.base.kind",
        "steps.tok.vocab_size", "steps.tok.type", "steps.tok.eot_token", "steps.corpus.sources", "steps.corpus.ops",
        "steps.corpus.split.val", "steps.corpus.workers", "steps.eval.batch_size", "steps.eval.bootstrap",
        "steps.eval.suites", "steps.eval.model", "steps", "run", "steps.base", "steps.new.kind", "steps.base.model"]

toml_strings = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20).map(
    lambda s: '"' + s.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"')
toml_scalars = st.one_of(
    st.sampled_from(["inf", "-inf", "nan", "1e999", "-1e999", "true", "false", "0", "-1", "1e9", "2.5", "1_000_000_000",
                     "18446744073709551617", "1" + "0" * 400, '"../../../../tmp/x"', '"a\\u0000b"', '"this.x"', '"/"',
                     '"pretrain"', '"data"', '"base"', '""']),
    st.integers().map(str),
    st.floats().map(lambda f: {"inf": "inf", "-inf": "-inf"}.get(repr(f), repr(f))),
    toml_strings,
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
        st.dictionaries(st.sampled_from(["kind", "path", "op", "type", "steps", "lr", "x", "package", "n_layer"]),
                        inner, max_size=3).map(lambda d: "{" + ", ".join(f"{k} = {v}" for k, v in d.items()) + "}"),
    ),
    max_leaves=6,
)
overrides = st.lists(st.tuples(st.sampled_from(KEYS), toml_values).map(lambda kv: f"{kv[0]}={kv[1]}"), min_size=1,
                     max_size=3)


def only_recipe_errors(path: Path, sets: list[str] = ()) -> None:
    try:
        api.compile(api.load(path, sets), path.parent / "work")
    except RecipeError as error:
        assert error.problems and all(problem and "\n" not in problem for problem in error.problems)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sets=overrides)
def test_fuzzed_overrides_give_only_recipe_errors(corpus, sets):
    only_recipe_errors(corpus / "base.toml", sets)


edits = st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), st.integers(min_value=0, max_value=8),
                           st.text(string.printable + "[]{}=\"'\\\u0000é", max_size=8)), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=edits)
def test_fuzzed_recipe_text_gives_only_recipe_errors(corpus, edits):
    text = (CORPUS / "base.toml").read_text()
    for at, cut, insert in edits:  # replace `cut` characters at a position with random text
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut:]
    path = corpus / "fuzzed.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    only_recipe_errors(path)
