"""The `data` step: reading each format and unit, the ops, the split, and the executor end to end."""

from __future__ import annotations

import io
import json
import random
import typing
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrecipe.digests import sha256_file
from llmrecipe.data.clean import clean_whitespace
from llmrecipe.data.corpusjobs import InProcessDedup
from llmrecipe.data.ops import OPS
from llmrecipe.data.read import Reader
from llmrecipe.data.split import assign_splits, split_of, text_position
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import DataOp, DedupExact, FilterLength, Normalize, Source, Split
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.data import run


def write_files(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)


def external(root: Path, names: list[str], source: int = 0) -> list[ExternalFile]:
    return [
        ExternalFile(source=source, name=name, sha256=sha256_file(root / name), size=(root / name).stat().st_size,
                     path=str(root / name))
        for name in names
    ]


def read_files(source: Source, files: list[ExternalFile], policy: str = "skip") -> pl.DataFrame:
    reader = Reader(source, 0, policy, source.metadata)
    return pl.concat([pl.DataFrame(schema={"id": pl.String, "text": pl.String, "source": pl.Int32}),
                      *reader.documents(files)], how="diagonal")


def read(root: Path, files: dict[str, str | bytes], **source: typing.Any) -> pl.DataFrame:
    write_files(root, files)
    return read_files(Source(path=str(root), **source), external(root, sorted(files)))


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def context(tmp_path: Path, files: list[ExternalFile]) -> StepContext:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return StepContext(name="corpus", inputs={}, out_dir=out_dir, scratch_dir=tmp_path / "scratch", device="cpu",
                       reporter=LineReporter(), external=files)


def data_spec(sources: list[Source], ops: list[dict] = (), val: float = 0.0, test: float = 0.0) -> dict:
    return {"sources": [s.model_dump() for s in sources], "ops": list(ops), "split": {"val": val, "test": test},
            "on_bad_record": "skip", "batch_mb": 64, "workers": 1, "mix_seed": None}


def frame_of(*texts: str) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"0:doc#{k}" for k in range(len(texts))], "text": list(texts), "source": [0] * len(texts)},
                        schema={"id": pl.String, "text": pl.String, "source": pl.Int32})


# reading


def test_text_unit_file_reads_one_document_per_file(tmp_path):
    docs = read(tmp_path, {"a.txt": "first\n\nfile", "sub/b.txt": b"\xef\xbb\xbfsecond \xff"})
    assert docs.schema == {"id": pl.String, "text": pl.String, "source": pl.Int32}
    assert docs["id"].to_list() == ["0:a.txt", "0:sub/b.txt"]
    # the byte-order mark is dropped, the invalid byte is read as Windows-1252
    assert docs["text"].to_list() == ["first\n\nfile", "second \u00ff"]


def test_text_unit_paragraph_splits_on_blank_lines(tmp_path):
    text = "  one\nstill one  \n\n \t\ntwo\r\n\r\nthree\n\n\n"
    docs = read(tmp_path, {"a.txt": text, "b.txt": "\n\n", "c.txt": "solo"}, unit="paragraph")
    assert docs["text"].to_list() == ["one\nstill one", "two", "three", "solo"]
    assert docs["id"].to_list() == ["0:a.txt#0", "0:a.txt#1", "0:a.txt#2", "0:c.txt#0"]


def test_text_unit_line_drops_empty_lines(tmp_path):
    docs = read(tmp_path, {"a.txt": "x\r\n\n  \ny z\n"}, unit="line")
    assert docs["text"].to_list() == ["x", "y z"]
    assert docs["id"].to_list() == ["0:a.txt#0", "0:a.txt#1"]


def test_jsonl_reads_text_field_and_numbers_rows(tmp_path):
    lines = [{"body": "alpha", "n": 1}, {"body": None, "n": 2}, {"body": "gamma", "n": 3}]
    content = "\n".join(json.dumps(line) for line in lines) + "\n"
    docs = read(tmp_path, {"d.jsonl": content, "empty.jsonl": ""}, text_field="body")
    assert docs["text"].to_list() == ["alpha", "gamma"]
    assert docs["id"].to_list() == ["0:d.jsonl#0", "0:d.jsonl#2"]  # a row without text keeps the others' numbers


def test_jsonl_field_that_first_appears_late_is_found(tmp_path):
    content = "".join(json.dumps({"n": k}) + "\n" for k in range(150)) + json.dumps({"text": "late"}) + "\n"
    docs = read(tmp_path, {"d.jsonl": content})
    assert docs["text"].to_list() == ["late"] and docs["id"].to_list() == ["0:d.jsonl#150"]


def test_parquet_reads_text_field(tmp_path):
    content = parquet_bytes(pl.DataFrame({"content": ["p", "q"], "other": [1, 2]}))
    docs = read(tmp_path, {"t.parquet": content}, format="parquet", text_field="content")
    assert docs["text"].to_list() == ["p", "q"]
    assert docs["id"].to_list() == ["0:t.parquet#0", "0:t.parquet#1"]


def test_auto_format_picks_by_extension_and_keeps_file_order(tmp_path):
    files = {
        "a.jsonl": '{"text": "from jsonl"}\n',
        "b.txt": "from text",
        "c.parquet": parquet_bytes(pl.DataFrame({"text": ["from parquet"]})),
        "d.ndjson": '{"text": "from ndjson"}\n',
        "e.md": "from markdown",
    }
    docs = read(tmp_path, files)
    assert docs["text"].to_list() == ["from jsonl", "from text", "from parquet", "from ndjson", "from markdown"]


def test_missing_jsonl_field_names_file_and_columns(tmp_path):
    with pytest.raises(StepError) as caught:
        read(tmp_path, {"d.jsonl": '{"body": "x", "title": "t"}\n'})
    message = str(caught.value)
    assert "d.jsonl" in message and "'text'" in message and "body, title" in message


def test_non_text_field_is_a_bad_record(tmp_path):
    write_files(tmp_path, {"d.jsonl": '{"text": 3}\n'})
    with pytest.raises(StepError, match="holds int: 3"):
        read_files(Source(path=str(tmp_path)), external(tmp_path, ["d.jsonl"]), policy="fail")


def test_file_changed_since_plan_is_a_step_error(tmp_path):
    write_files(tmp_path, {"a.txt": "planned"})
    files = external(tmp_path, ["a.txt"])
    write_files(tmp_path, {"a.txt": "edited"})
    with pytest.raises(StepError, match="changed after the plan"):
        read_files(Source(path=str(tmp_path)), files)


# ops


def kept(docs: pl.DataFrame, op) -> pl.DataFrame:
    result = OPS[op.op](docs, op)
    return result.frame if result.drop is None else result.frame.filter(result.drop.is_null())


def deduplicated(docs: pl.DataFrame, op, work: Path) -> pl.DataFrame:
    corpus = InProcessDedup(op, work)
    corpus.observe(docs["text"])
    return docs.filter(pl.Series(corpus.decide().keep))


def normalized(docs: pl.DataFrame, op: Normalize) -> pl.DataFrame:
    return OPS["normalize"](docs, op).frame


def test_ops_registry_matches_recipe_schema():
    union = typing.get_args(typing.get_args(DataOp)[0])
    assert set(OPS) == {op.model_fields["op"].default for op in union}


def test_normalize_nfkc_folds_compatibility_characters():
    out = normalized(frame_of("\ufb01ne caf\u0065\u0301", "\u00bd"), Normalize(form="NFKC"))
    assert out["text"].to_list() == ["fine café", "1\u20442"]


def test_normalize_nfc_keeps_ligatures_and_none_keeps_everything():
    composed = normalized(frame_of("\ufb01 e\u0301"), Normalize(form="NFC"))
    assert composed["text"].to_list() == ["\ufb01 é"]
    untouched = normalized(frame_of(" \ufb01 e\u0301\r\n"), Normalize(form="none", whitespace=False))
    assert untouched["text"].to_list() == [" \ufb01 e\u0301\r\n"]


def test_normalize_touches_only_documents_that_need_it_and_leaves_its_input_alone():
    docs = frame_of("plain ascii", "\ufb01rst", "more ascii", "e\u0301")
    out = normalized(docs, Normalize(form="NFKC", whitespace=False))
    assert out["text"].to_list() == ["plain ascii", "first", "more ascii", "\u00e9"]
    assert docs["text"].to_list() == ["plain ascii", "\ufb01rst", "more ascii", "e\u0301"]


def test_normalize_whitespace_cleanup():
    text = "\n  title \t\r\nbody\r\rmore  \n\n\n\n\nend \n \n"
    out = normalized(frame_of(text), Normalize())
    assert out["text"].to_list() == ["title\nbody\n\nmore\n\nend"]


def test_nfkc_no_break_space_at_line_end_is_stripped():
    out = normalized(frame_of("a\u00a0\nb"), Normalize(form="NFKC"))
    assert out["text"].to_list() == ["a\nb"]


def test_filter_length_thresholds():
    docs = frame_of("", "ab", "abcd", "abcdefgh", "a b c")
    assert kept(docs, FilterLength(min_chars=2, max_chars=5))["text"].to_list() == ["ab", "abcd", "a b c"]
    assert kept(docs, FilterLength(min_words=2))["text"].to_list() == ["a b c"]
    assert kept(docs, FilterLength())["text"].to_list() == docs["text"].to_list()


def test_dedup_exact_keeps_first_in_order(tmp_path):
    out = deduplicated(frame_of("b", "a", "b", "c", "a"), DedupExact(), tmp_path)
    assert out["text"].to_list() == ["b", "a", "c"]
    assert out["id"].to_list() == ["0:doc#0", "0:doc#1", "0:doc#3"]


@settings(max_examples=150, deadline=None)
@given(texts=st.lists(st.text(alphabet=st.sampled_from("ab \t\r\n\u00a0\u0301\ufb01\u2028é"), max_size=30), max_size=5),
       form=st.sampled_from(["NFC", "NFKC", "none"]))
def test_normalize_is_idempotent(texts, form):
    op = Normalize(form=form)
    once = normalized(frame_of(*texts), op)
    assert normalized(once, op)["text"].to_list() == once["text"].to_list()


@settings(max_examples=100, deadline=None)
@given(texts=st.lists(st.text(max_size=20), max_size=5))
def test_whitespace_cleanup_is_idempotent_on_any_text(texts):
    once = pl.DataFrame({"text": texts}, schema={"text": pl.String}).select(clean_whitespace(pl.col("text")))
    assert once.select(clean_whitespace(pl.col("text")))["text"].to_list() == once["text"].to_list()


# split


def test_split_is_stable_disjoint_and_complete():
    docs = frame_of(*(f"document number {k}" for k in range(1000)))
    config = Split(val=0.1, test=0.2)
    first, second = assign_splits(docs, config), assign_splits(docs, config)
    ids = {name: set(frame["id"].to_list()) for name, frame in first.items()}
    assert set(first) == {"train", "val", "test"}
    assert all(first[name].equals(second[name]) for name in first)
    assert not (ids["train"] & ids["val"] or ids["train"] & ids["test"] or ids["val"] & ids["test"])
    assert ids["train"] | ids["val"] | ids["test"] == set(docs["id"].to_list())
    assert 60 <= len(ids["val"]) <= 140 and 150 <= len(ids["test"]) <= 250


def test_split_positions_are_pinned():
    # A digest of the bytes, not polars' hash(): these must hold on every machine and polars version.
    assert text_position("hello") == 0.6551350150274586
    assert text_position("") == 0.8931675160897388
    config = Split(val=0.35, test=0.35)
    assert [split_of(t, config) for t in ("hello", "world", "llmrecipe")] == ["test", "val", "train"]


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=20), min_size=1, max_size=8), val=st.floats(0, 0.45), test=st.floats(0, 0.45))
def test_split_is_a_function_of_text(texts, val, test):
    config = Split(val=val, test=test)
    docs = frame_of(*texts, *reversed(texts))  # the same texts again, elsewhere in the frame
    for name, frame in assign_splits(docs, config).items():
        assert all(split_of(text, config) == name for text in frame["text"].to_list())


# the executor


def test_executor_end_to_end(tmp_path):
    src = tmp_path / "src"
    paragraphs = [f"Paragraph {k} says something \ufb01ne.  " for k in range(200)]
    write_files(src, {"book.txt": "\n\n".join(paragraphs + paragraphs[:10] + ["x"]),
                      "notes.jsonl": '{"text": "a jsonl note of some length"}\n{"text": "y"}\n'})
    sources = [Source(path=str(src), glob="*.txt", unit="paragraph"), Source(path=str(src), glob="*.jsonl")]
    files = external(src, ["book.txt"], source=0) + external(src, ["notes.jsonl"], source=1)
    ops = [{"op": "normalize", "form": "NFKC"}, {"op": "dedup_exact"}, {"op": "filter_length", "min_chars": 5}]
    ctx = context(tmp_path, files)

    metrics = run(data_spec(sources, ops, val=0.1, test=0.1), ctx)

    stats = json.loads((ctx.out_dir / "stats.json").read_text())
    assert [s["docs"] for s in stats["sources"]] == [211, 2]
    for stage in stats["stages"]:
        assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values())
    assert [(s["stage"], s["dropped"]) for s in stats["stages"]] == [
        ("ops[0] normalize", {}), ("ops[1] dedup_exact", {"duplicate": 10}), ("ops[2] filter_length", {"min_chars": 2})]
    assert stats["totals"] == {"docs_in": 213, "kept": 201, "dropped": 12,
                               "dropped_by_reason": {"ops[1] dedup_exact: duplicate": 10, "ops[2] filter_length: min_chars": 2}}
    splits = {name: pl.read_parquet(ctx.out_dir / f"{name}.parquet") for name in ("train", "val", "test")}
    assert all(frame.schema == {"id": pl.String, "text": pl.String, "source": pl.Int32} for frame in splits.values())
    assert sum(len(frame) for frame in splits.values()) == 201
    assert {name: len(frame) for name, frame in splits.items()} == {n: stats["splits"][n]["docs"] for n in splits}
    assert metrics["documents"] == 213 and metrics["kept"] == 201 and metrics["train_docs"] == len(splits["train"])
    assert metrics["dropped ops[1] dedup_exact"] == 10 and metrics["dropped ops[2] filter_length"] == 2
    dropped = pl.read_parquet(ctx.out_dir / "dropped.parquet")
    assert len(dropped) == 12 and set(dropped["reason"]) == {"duplicate", "min_chars"}
    duplicates = dropped.filter(pl.col("reason") == "duplicate")
    assert duplicates["duplicate_of"].to_list() == [f"0:book.txt#{k}" for k in range(10)]
    samples = {(s["stage"], s["reason"]) for s in stats["dropped_samples"]}
    assert samples == {("ops[1] dedup_exact", "duplicate"), ("ops[2] filter_length", "min_chars")}
    assert all("\ufb01" not in text for text in splits["train"]["text"].to_list())


def test_executor_writes_all_splits_even_when_empty(tmp_path):
    write_files(tmp_path / "src", {"a.txt": "only document"})
    ctx = context(tmp_path, external(tmp_path / "src", ["a.txt"]))
    metrics = run(data_spec([Source(path=str(tmp_path / "src"))]), ctx)
    assert metrics["train_docs"] == 1 and metrics["val_docs"] == 0 and metrics["test_docs"] == 0
    assert pl.read_parquet(ctx.out_dir / "test.parquet").schema == {"id": pl.String, "text": pl.String, "source": pl.Int32}


def test_op_that_removes_everything_is_named(tmp_path):
    write_files(tmp_path / "src", {"a.txt": "short\n\nshort\n\ntiny"})
    ctx = context(tmp_path, external(tmp_path / "src", ["a.txt"]))
    ops = [{"op": "dedup_exact"}, {"op": "filter_length", "min_chars": 100}]
    with pytest.raises(StepError, match=r"ops\[1\] filter_length removed the last 2 documents \(\d+ characters\) by min_chars = 100: 2; loosen"):
        run(data_spec([Source(path=str(tmp_path / "src"), unit="paragraph")], ops), ctx)


def test_no_documents_is_a_step_error(tmp_path):
    write_files(tmp_path / "src", {"a.txt": "\n \n"})
    ctx = context(tmp_path, external(tmp_path / "src", ["a.txt"]))
    with pytest.raises(StepError, match="no documents"):
        run(data_spec([Source(path=str(tmp_path / "src"), unit="line")]), ctx)


def test_empty_split_that_was_asked_for_says_how_to_fix(tmp_path):
    write_files(tmp_path / "src", {"a.txt": "one whole book in a single file"})
    ctx = context(tmp_path, external(tmp_path / "src", ["a.txt"]))
    with pytest.raises(StepError, match=r"split 'val'.*unit = \"paragraph\".*larger split.val"):
        run(data_spec([Source(path=str(tmp_path / "src"))], val=0.05), ctx)


def test_worker_processes_give_the_same_output_as_one_process(tmp_path):
    """Three shards of about 1 MB run by two spawned workers: splits, stats and dropped rows equal the
    in-process run's (ledger parts merged in shard order)."""
    words = [f"word{k}" for k in range(400)] + ["the", "and", "of", "to", "with", "that"]
    rng = random.Random(0)
    docs = [" ".join(rng.choices(words, k=60 + k % 40)) + "." for k in range(5_000)]
    docs += docs[:300] + [d.replace("word1 ", "word2 ", 1) for d in docs[300:600]] + ["mail me at a@b.org please"] * 3
    src = tmp_path / "src"
    write_files(src, {"a.jsonl": "".join(json.dumps({"text": d}) + "\n" for d in docs)})
    ops = [{"op": "normalize"}, {"op": "quality", "off": ["min_stop_words"]}, {"op": "pii"}, {"op": "dedup_exact"},
           {"op": "dedup_near", "threshold": 0.7}, {"op": "filter_length", "min_chars": 30}]
    outputs = []
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        root.mkdir()
        ctx = context(root, external(src, ["a.jsonl"]))
        spec = {**data_spec([Source(path=str(src))], ops, val=0.1, test=0.1), "batch_mb": 1, "workers": workers}
        run(spec, ctx)
        outputs.append({name: pl.read_parquet(ctx.out_dir / f"{name}.parquet")
                        for name in ("train", "val", "test", "dropped")})
        outputs[-1]["stats"] = json.loads((ctx.out_dir / "stats.json").read_text())
    one, two = outputs
    assert len(one["stats"]["stages"]) == 6 and one["stats"]["totals"]["dropped"] >= 600
    assert one["stats"] == two["stats"]
    for name in ("train", "val", "test", "dropped"):
        assert one[name].equals(two[name])


def test_plan_shows_lsh_banding_and_workers_leave_the_fingerprint_alone(tmp_path):
    from llmrecipe import api
    from tests.conftest import write_tiny_recipe

    near = '{ op = "dedup_near", num_perm = 112, bands = 28, threshold = 0.7 }'
    path = write_tiny_recipe(tmp_path, edits=(('{ op = "dedup_exact" }', near),))
    plan = api.compile(api.load(path, ()))
    corpus = next(step for step in plan.steps if step.name == "corpus")
    assert corpus.derived == {"ops[1].lsh_bands_x_rows": "28 x 4", "ops[1].lsh_threshold_estimate": 0.435,
                              "ops[1].chance_a_pair_at_threshold_is_compared": "99.95%",
                              "ops[1].compared_pairs_judged_by": "MinHash estimate, typical error +-0.09; verify = "
                                                                 "true judges by exact Jaccard"}
    other = api.compile(api.load(path, ["steps.corpus.workers=1", "steps.corpus.batch_mb=1"]))
    assert next(s for s in other.steps if s.name == "corpus").fingerprint == corpus.fingerprint


def test_stats_and_the_report_give_what_cleaning_kept_of_each_source(tmp_path):
    from llmrecipe.run.report import _accounting

    long = "The king speaks of the castle and the sea tonight."
    write_files(tmp_path / "a", {"a.txt": "\n\n".join([long] * 1 + [f"{long} {i}" for i in range(9)])})
    write_files(tmp_path / "b", {"b.txt": "\n\n".join(["short", "tiny", f"{long} b"])})
    files = external(tmp_path / "a", ["a.txt"], source=0) + external(tmp_path / "b", ["b.txt"], source=1)
    ctx = context(tmp_path, files)
    sources = [Source(path=str(tmp_path / "a"), unit="paragraph"), Source(path=str(tmp_path / "b"), unit="paragraph")]
    run(data_spec(sources, [{"op": "filter_length", "min_chars": 20}]), ctx)
    stats = json.loads((ctx.out_dir / "stats.json").read_text())
    a, b = stats["sources"]
    assert (a["docs"], a["kept_docs"], a["kept_docs_share"]) == (10, 10, 1.0)
    assert (b["docs"], b["kept_docs"], b["kept_docs_share"]) == (3, 1, 0.3333)
    assert b["kept_chars"] == len(long) + 2 and b["chars"] == len(long) + 2 + len("short") + len("tiny")
    table = "\n".join(_accounting("corpus", stats))
    assert "| source 1 | 1 of 3 | 33.3% |" in table and "| after ops[0] filter_length | 11 |" in table
