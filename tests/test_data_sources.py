"""Sources: compression, CSV, ids and metadata, max_docs, mixing, URL downloads, and bad records by policy."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
from pathlib import Path

import polars as pl
import pytest
import zstandard

from llmrecipe.data.fetch import fetch
from llmrecipe.data.locate import external_files
from llmrecipe.digests import sha256_file
from llmrecipe.errors import RecipeError, StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source
from llmrecipe.recipe.load import load_recipe
from llmrecipe.recipe.recipe import Recipe
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.data import run


def write(root: Path, files: dict[str, str | bytes]) -> list[str]:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return sorted(files)


def external(root: Path, names: list[str], source: int = 0) -> list[ExternalFile]:
    return [ExternalFile(source=source, name=n, sha256=sha256_file(root / n), size=(root / n).stat().st_size,
                         path=str(root / n)) for n in names]


def run_step(tmp_path: Path, sources: list[Source], files: list[ExternalFile], ops=(), policy="skip", seed=None,
             downloads: Path | None = None) -> tuple[dict, dict]:
    out = tmp_path / "out"
    out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(name="corpus", inputs={}, out_dir=out, scratch_dir=tmp_path / "scratch", device="cpu",
                      reporter=LineReporter(), external=files, downloads_dir=downloads)
    spec = {"sources": [s.model_dump() for s in sources], "ops": list(ops), "split": {"val": 0.0, "test": 0.0},
            "on_bad_record": policy, "batch_mb": 1, "workers": 1, "mix_seed": seed}
    metrics = run(spec, ctx)
    return metrics, json.loads((out / "stats.json").read_text())


def train(tmp_path: Path) -> pl.DataFrame:
    return pl.read_parquet(tmp_path / "out" / "train.parquet")


def test_gzip_zstd_and_csv_with_id_field_and_metadata(tmp_path):
    src = tmp_path / "src"
    lines = "".join(json.dumps({"key": f"j{k}", "text": f"jsonl doc {k}", "lang": "en", "n": k}) + "\n" for k in range(3))
    names = write(src, {
        "a.jsonl.gz": gzip.compress(lines.encode()),
        "b.txt.zst": zstandard.ZstdCompressor().compress(b"one\ntwo\n"),
        "c.csv": "key,text,lang\nc0,\"csv, with comma\",fr\n",
    })
    source = Source(path=str(src), id_field="key", metadata=["lang", "n"], unit="line")
    run_step(tmp_path, [source], external(src, names))
    docs = train(tmp_path)
    assert docs.columns == ["id", "text", "source", "lang", "n"]
    assert docs.sort("id").rows() == [
        ("0:b.txt.zst#0", "one", 0, None, None), ("0:b.txt.zst#1", "two", 0, None, None),
        ("0:c0", "csv, with comma", 0, "fr", None),
        ("0:j0", "jsonl doc 0", 0, "en", "0"), ("0:j1", "jsonl doc 1", 0, "en", "1"), ("0:j2", "jsonl doc 2", 0, "en", "2"),
    ]


def test_max_docs_stops_reading(tmp_path):
    src = tmp_path / "src"
    names = write(src, {"a.txt": "\n".join(f"line {k}" for k in range(100)), "b.txt": "more"})
    metrics, stats = run_step(tmp_path, [Source(path=str(src), unit="line", max_docs=7)], external(src, names))
    assert metrics["documents"] == 7 and train(tmp_path)["text"].to_list() == [f"line {k}" for k in range(7)]


def test_mixing_weights_set_proportions_deterministically(tmp_path):
    src = tmp_path / "src"
    names = write(src, {"a.txt": "\n".join(f"a{k}" for k in range(1000)), "b.txt": "\n".join(f"b{k}" for k in range(300))})
    sources = [Source(path=str(src / "a.txt"), unit="line", weight=1), Source(path=str(src / "b.txt"), unit="line", weight=1)]
    files = external(src, ["a.txt"], 0) + external(src, ["b.txt"], 1)
    metrics, stats = run_step(tmp_path, sources, files, seed=3)
    counts = train(tmp_path).group_by("source").len().sort("source")["len"].to_list()
    assert counts == [300, 300] and stats["stages"][0]["dropped"] == {"mixing": 700}
    first = sorted(train(tmp_path)["id"].to_list())
    run_step(tmp_path / "again", sources, files, seed=3)
    assert sorted(train(tmp_path / "again")["id"].to_list()) == first
    run_step(tmp_path / "other", sources, files, seed=4)
    assert sorted(train(tmp_path / "other")["id"].to_list()) != first


# bad records


BAD_FILES = {
    "bad.jsonl": b'{"text": "good one"}\n{"text": broken\n{"text": "good two"}\n[1, 2]\n{"other": 1}\n',
    "empty.jsonl": b"",
    "latin1.txt": b"caf\xe9 au lait",
    "nul.txt": b"nul\x00 byte",
}


def test_bad_records_are_skipped_counted_and_sampled(tmp_path):
    src = tmp_path / "src"
    names = write(src, BAD_FILES)
    metrics, stats = run_step(tmp_path, [Source(path=str(src))], external(src, names))
    assert sorted(train(tmp_path)["text"].to_list()) == ["café au lait", "good one", "good two", "nul byte"]
    log = stats["sources"][0]
    assert log["bad_records"] == {"malformed_json": 2, "missing_text": 1, "empty_file": 1}
    assert log["repaired"] == {"invalid_utf8_bytes": 1, "nul_bytes": 1}
    assert {(s["kind"], s["where"]) for s in log["bad_samples"]} == {
        ("malformed_json", "2"), ("malformed_json", "4"), ("missing_text", "5"), ("empty_file", "")}
    assert metrics["bad_records"] == 4


@pytest.mark.parametrize("name", ["bad.jsonl", "empty.jsonl"])
def test_bad_records_fail_the_step_under_fail_policy(tmp_path, name):
    src = tmp_path / "src"
    names = write(src, {name: BAD_FILES[name], "ok.txt": "fine"})
    with pytest.raises(StepError, match=rf"{name}.*bad record.*on_bad_record = \"skip\""):
        run_step(tmp_path, [Source(path=str(src))], external(src, names), policy="fail")


@pytest.mark.e2e
def test_a_single_50_mb_line_is_one_document(tmp_path):
    src = tmp_path / "src"
    big = ("word " * 10_000_000).encode()
    names = write(src, {"big.jsonl": b'{"text": "' + big + b'"}\n' + b'{"text": "small"}\n'})
    metrics, stats = run_step(tmp_path, [Source(path=str(src))], external(src, names),
                              ops=[{"op": "normalize"}, {"op": "dedup_exact"}, {"op": "filter_length", "min_chars": 1}])
    assert metrics["documents"] == 2 and metrics["kept"] == 2
    assert stats["stages"][0]["chars_in"] == len(big) + 5


def test_filtering_everything_names_the_op(tmp_path):
    src = tmp_path / "src"
    names = write(src, {"a.txt": "short one\n\nshort two"})
    ops = [{"op": "normalize"}, {"op": "quality"}, {"op": "dedup_exact"}]
    with pytest.raises(StepError) as error:
        run_step(tmp_path, [Source(path=str(src), unit="paragraph")], external(src, names), ops=ops)
    # the deciding numbers are in the message: a failed step writes no stats.json
    assert "ops[1] quality removed the last 2 documents (18 characters) by min_words = 50: 2; loosen" in str(error.value)


def test_a_whole_book_past_max_words_is_explained_with_the_rule_and_the_fix(tmp_path):
    src = tmp_path / "src"
    names = write(src, {"book.txt": "The king speaks of the sea and the night. " * 400})
    ops = [{"op": "quality", "max_words": 1000, "off": ["max_duplicate_lines", "max_duplicate_line_chars",
                                                        "max_top_ngram_chars", "max_duplicate_ngram_chars"]}]
    with pytest.raises(StepError) as error:
        run_step(tmp_path, [Source(path=str(src))], external(src, names), ops=ops)
    message = str(error.value)
    assert "ops[0] quality removed the last 1 documents" in message and "by max_words = 1000: 1" in message
    assert 'unit = "paragraph"' in message


# URL sources


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves `content` at any path, honouring `Range: bytes=N-`; cuts the body short once if `cut` is set."""

    content = b""
    cut: int | None = None
    requests: list = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-") or 0)
        body = self.content[start:]
        type(self).requests.append(start)
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.cut is not None:
            self.wfile.write(body[: self.cut])
            type(self).cut = None
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.requests = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_url_source_downloads_once_verifies_and_is_planned_without_network(tmp_path, server):
    content = b'{"text": "from the web"}\n'
    RangeHandler.content = content
    digest = hashlib.sha256(content).hexdigest()
    url = f"{server}/data/corpus.jsonl?x=1"
    recipe = Recipe.model_validate({"run": {"name": "r"}, "steps": {"corpus": {"kind": "data", "sources": [{"url": url, "sha256": digest}]}}})
    files = external_files(recipe, tmp_path)["corpus"]
    assert RangeHandler.requests == [] and [(f.name, f.sha256, f.path) for f in files] == [("corpus.jsonl", digest, url)]
    source = Source(url=url, sha256=digest)
    run_step(tmp_path, [source], files, downloads=tmp_path / "downloads")
    run_step(tmp_path / "again", [source], files, downloads=tmp_path / "downloads")
    assert train(tmp_path)["text"].to_list() == ["from the web"] and RangeHandler.requests == [0]
    assert (tmp_path / "downloads" / digest).read_bytes() == content


def test_download_resumes_with_range_after_a_cut(tmp_path, server):
    content = bytes(range(256)) * 400
    RangeHandler.content, RangeHandler.cut = content, 30_000
    digest = hashlib.sha256(content).hexdigest()
    with pytest.raises(StepError, match="run again to resume"):
        fetch(f"{server}/f.bin", digest, tmp_path)
    path = fetch(f"{server}/f.bin", digest, tmp_path)
    assert path.read_bytes() == content and RangeHandler.requests == [0, 30_000]


def test_checksum_mismatch_names_both_hashes(tmp_path, server):
    RangeHandler.content = b"tampered"
    pinned = "0" * 64
    actual = hashlib.sha256(b"tampered").hexdigest()
    with pytest.raises(StepError, match=f"sha256 {actual}, but the recipe pins {pinned}"):
        fetch(f"{server}/f.txt", pinned, tmp_path)


def test_url_needs_a_valid_sha256(tmp_path):
    with pytest.raises(ValueError, match="`url` needs `sha256`"):
        Source(url="https://example.org/a.txt")
    with pytest.raises(ValueError, match="64 lower-case hex"):
        Source(url="https://example.org/a.txt", sha256="abc")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[run]\nname = "r"\n[steps.c]\nkind = "data"\nsources = [{ url = "ftp://x/a.txt", sha256 = "' + "0" * 64 + '" }]\n')
    with pytest.raises(RecipeError, match=r"steps\.c\.sources.*not an http\(s\) URL"):
        load_recipe(recipe)


# hostile input


def test_a_symlink_loop_lists_each_file_once(tmp_path):
    """A link back to an ancestor folder, a second link to it, and a link to a file: each file is read once."""
    from llmrecipe.data.locate import source_files

    src = tmp_path / "src"
    write(src, {"a.txt": "alpha", "sub/b.txt": "beta"})
    (src / "sub" / "loop").symlink_to(src, target_is_directory=True)
    (src / "loop2").symlink_to(src / "sub", target_is_directory=True)
    (src / "alias.txt").symlink_to(src / "a.txt")
    root, files = source_files(Source(path=str(src)), tmp_path, "steps.corpus.sources[0]")
    assert [p.relative_to(root).as_posix() for p in files] == ["a.txt", "sub/b.txt"]


def test_binary_files_are_counted_skips_or_a_clear_error(tmp_path):
    import random

    noise = random.Random(0).randbytes(20_000)
    src = tmp_path / "src"
    names = write(src, {"good.txt": "plain text, caf\xe9 included", "image.png": b"\x89PNG\r\n\x1a\n" + noise,
                        "blob.jsonl": noise})
    _, stats = run_step(tmp_path, [Source(path=str(src), format="auto")], external(src, names))
    assert train(tmp_path)["text"].to_list() == ["plain text, café included"]
    assert stats["sources"][0]["bad_records"] == {"binary_file": 2}
    with pytest.raises(StepError, match=r"blob\.jsonl: bad record \(binary_file"):
        run_step(tmp_path / "again", [Source(path=str(src))], external(src, names), policy="fail")


def test_latin1_text_is_not_binary():
    from llmrecipe.data.read import looks_binary

    assert not looks_binary("Déjà vu à la française, señor. ".encode("latin-1") * 20)
    assert not looks_binary("ünïcödé ✓ text\n".encode() * 20)
    assert looks_binary("utf-16 text".encode("utf-16-le"))


def test_non_string_text_values_are_counted_skips_or_a_clear_error(tmp_path):
    src = tmp_path / "src"
    lines = ['{"text": "kept one"}', '{"text": 5}', '{"text": ["a list"]}', '{"meta": {"text": 1}, "text": "kept two"}',
             '{"text": {"an": "object"}}', '{"text": null}', '{"text": true}', '{"note": "\\"text\\": 3", "text": "kept three"}']
    names = write(src, {"d.jsonl": "\n".join(lines) + "\n"})
    _, stats = run_step(tmp_path, [Source(path=str(src))], external(src, names))
    assert sorted(train(tmp_path)["text"].to_list()) == ["kept one", "kept three", "kept two"]
    assert stats["sources"][0]["bad_records"] == {"text_not_string": 4, "missing_text": 1}
    with pytest.raises(StepError, match=r"d\.jsonl:2: bad record \(text_not_string: \"'text' holds int: 5\""):
        run_step(tmp_path / "again", [Source(path=str(src))], external(src, names), policy="fail")
