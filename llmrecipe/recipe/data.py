"""The `data` step: where documents come from, what happens to them, how they are split."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, Strict, field_validator, model_validator

from llmrecipe.recipe.base import MAX_PROCESSES, Section

SHA256 = re.compile(r"^[0-9a-f]{64}$")

NGramSize = Annotated[int, Strict(False), Field(ge=1, le=100)]
"""Words per n-gram: a TOML table key, so written as a string (`5 = 0.15` is `"5"`)."""


class Source(Section):
    """Documents from local files (`path`), files shipped inside an installed package (`package`), or one file
    downloaded from `url` and pinned by its `sha256`."""

    path: str | None = None
    """A file, a directory, or a glob pattern; relative paths are relative to the recipe file. A path with a
    protocol (`s3://bucket/corpus`, `gs://...`, `file:///...`) is read through fsspec (the `remote` extra)."""
    package: str | None = None
    """An installed Python package whose shipped data files are read (no network)."""
    url: str | None = None
    """An http(s) URL of one file, downloaded once into the workdir's download cache (resumed if cut off)."""
    sha256: str | None = None
    """The sha256 of the file at `url` (required with `url`): the plan fingerprints it without downloading."""
    glob: str = "**/*"
    """Which files to take below `path` (when it is a directory) or below the package's folder."""
    format: Literal["auto", "text", "jsonl", "parquet", "csv"] = "auto"
    """File format; `auto` picks it from the extension (.jsonl/.json/.ndjson, .parquet, .csv, anything else is
    text), looking through a .gz or .zst suffix, which is decompressed transparently."""
    unit: Literal["file", "paragraph", "line"] = "file"
    """For text files: one document per file, per blank-line separated paragraph, or per line."""
    text_field: str = "text"
    """For JSONL, Parquet and CSV: the column that holds the document text."""
    id_field: str | None = None
    """For JSONL, Parquet and CSV: a column whose value becomes the document id (default: file name and row)."""
    metadata: list[str] = []
    """Further columns kept next to the text in the outputs (as strings; missing values are null)."""
    max_docs: int | None = Field(default=None, ge=1)
    """Read at most this many documents from the source (the first ones, in file order)."""
    weight: float | None = Field(default=None, gt=0)
    """Mixing weight: when any source has one, the corpus holds each source's documents in proportion to its
    weight (a source without one counts 1), sampling as many documents as that allows, chosen under the seed."""

    @model_validator(mode="after")
    def _one_origin(self) -> "Source":
        origins = [name for name in ("path", "package", "url") if getattr(self, name) is not None]
        if len(origins) != 1:
            raise ValueError(
                "give exactly one of `path` (local files), `package` (an installed package) or `url` (a download)"
            )
        if (self.url is None) != (self.sha256 is None):
            raise ValueError("`url` needs `sha256` (the file's pinned digest) and `sha256` is only for `url`")
        return self

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is not None and not SHA256.match(value):
            raise ValueError(f"'{value}' is not a sha256 digest: give 64 lower-case hex digits (`sha256sum FILE`)")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"'{value}' is not an http(s) URL; local files go in `path`")
        return value


class Normalize(Section):
    op: Literal["normalize"] = "normalize"
    form: Literal["NFC", "NFKC", "none"] = "NFC"
    """Unicode normalization form applied to every document."""
    whitespace: bool = True
    """Strip trailing spaces on every line, turn CRLF into LF and collapse runs of 3+ newlines to 2."""
    control_chars: bool = True
    """Remove control characters other than tab and newline (they are invisible and confuse tokenizers)."""
    fix_encoding: bool = False
    """Repair mojibake (UTF-8 read as Windows-1252, e.g. `cafÃ©` -> `café`) with ftfy; repaired documents are counted."""
    lowercase: bool = False
    """Lower-case every document."""
    strip_markup: bool = False
    """Remove HTML/XML tags, comments and scripts, and decode character entities (`&amp;` -> `&`)."""


class RegexReplace(Section):
    op: Literal["regex_replace"] = "regex_replace"
    pattern: str
    """A regular expression in the syntax of polars' engine, Rust's `regex` crate: Perl-like classes, groups,
    `(?i)` flags and Unicode classes (`\\p{L}`), but no look-around (`(?=...)`, `(?<!...)`) and no backreferences
    (`\\1`); `validate` checks it with that engine."""
    replacement: str = ""
    """What each match becomes; `$1` refers to the first group."""


class RegexFilter(Section):
    op: Literal["regex_filter"] = "regex_filter"
    pattern: str
    """A regular expression in the syntax of polars' engine, Rust's `regex` crate: Perl-like classes, groups,
    `(?i)` flags and Unicode classes (`\\p{L}`), but no look-around (`(?=...)`, `(?<!...)`) and no backreferences
    (`\\1`); `validate` checks it with that engine."""
    keep: Literal["matching", "not_matching"] = "not_matching"
    """Keep the documents that match, or (default) drop them."""


class FilterLength(Section):
    op: Literal["filter_length"] = "filter_length"
    min_chars: int = Field(default=0, ge=0)
    """Drop documents shorter than this many characters."""
    max_chars: int | None = Field(default=None, ge=1)
    """Drop documents longer than this many characters (no limit when unset)."""
    min_words: int = Field(default=0, ge=0)
    """Drop documents with fewer whitespace-separated words than this."""
    max_words: int | None = Field(default=None, ge=1)
    """Drop documents with more whitespace-separated words than this (no limit when unset)."""
    min_lines: int = Field(default=0, ge=0)
    """Drop documents with fewer non-empty lines than this."""


class Quality(Section):
    """The Gopher quality and repetition rules (Rae et al. 2021, appendix A), each with its own threshold; list
    rules to leave out in `off`. Words are whitespace-separated tokens."""

    op: Literal["quality"] = "quality"
    off: list[str] = []
    """Rules not applied, by threshold name (e.g. `["min_stop_words", "max_duplicate_ngram_chars"]`)."""
    min_words: int = 50
    """Too few words."""
    max_words: int = 100_000
    """Too many words."""
    min_mean_word_length: float = 3.0
    """Mean word length (characters) below this: lists of symbols or numbers."""
    max_mean_word_length: float = 10.0
    """Mean word length above this: URLs, hashes, code."""
    max_symbol_word_ratio: float = 0.1
    """Hash signs and ellipses per word above this."""
    max_bullet_lines: float = 0.9
    """Share of lines starting with a bullet above this."""
    max_ellipsis_lines: float = 0.3
    """Share of lines ending with an ellipsis above this."""
    min_alpha_words: float = 0.8
    """Share of words holding an alphabetic character below this."""
    min_stop_words: int = 2
    """Fewer than this many of the English stop words `the be to of and that have with`."""
    max_duplicate_lines: float = 0.3
    """Share of lines that repeat an earlier line of the document above this."""
    max_duplicate_line_chars: float = 0.2
    """Share of characters in repeated lines above this."""
    max_duplicate_paragraphs: float = 0.3
    """Share of blank-line separated paragraphs that repeat an earlier one above this."""
    max_duplicate_paragraph_chars: float = 0.2
    """Share of characters in repeated paragraphs above this."""
    max_top_ngram_chars: dict[NGramSize, float] = {2: 0.2, 3: 0.18, 4: 0.16}
    """n -> limit on the share of word characters covered by the occurrences of one repeated word n-gram (the
    one covering most)."""
    max_duplicate_ngram_chars: dict[NGramSize, float] = {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.1}
    """n -> limit on the share of word characters inside word n-grams that occur more than once."""

    @field_validator("off")
    @classmethod
    def _known_rules(cls, value: list[str]) -> list[str]:
        rules = [name for name in cls.model_fields if name not in ("op", "off")]
        unknown = [name for name in value if name not in rules]
        if unknown:
            raise ValueError(f"unknown rule(s) {unknown}; the rules are: {', '.join(rules)}")
        return value


class Pii(Section):
    """Personal data found by pattern: e-mail addresses, phone numbers, IPv4/IPv6 addresses, credit-card numbers
    (Luhn-checked) and IBANs (checksum-checked)."""

    op: Literal["pii"] = "pii"
    kinds: list[Literal["email", "phone", "ip", "credit_card", "iban"]] = ["email", "phone", "ip", "credit_card", "iban"]
    """Which kinds to look for."""
    action: Literal["replace", "drop"] = "replace"
    """`replace` puts a typed placeholder (`<EMAIL>`, `<PHONE>`, `<IP>`, `<CREDIT_CARD>`, `<IBAN>`) in place of
    each match; `drop` removes documents that hold any."""


class DedupExact(Section):
    op: Literal["dedup_exact"] = "dedup_exact"
    """Keep one of documents whose content is identical (after the ops before this one)."""
    compare: Literal["normalized", "raw"] = "normalized"
    """`normalized` compares texts lower-cased with whitespace runs collapsed; `raw` compares them byte for byte."""


class DedupNear(Section):
    """MinHash over word shingles with LSH banding: documents whose Jaccard similarity reaches the threshold form
    clusters, and the earliest document of each cluster (in source order) is kept."""

    op: Literal["dedup_near"] = "dedup_near"
    shingle_size: int = Field(default=5, ge=1, le=100)
    """Words per shingle."""
    num_perm: int = Field(default=128, ge=2, le=1024)
    """Signature length (hash values per document)."""
    bands: int = Field(default=32, ge=1)
    """LSH bands; `num_perm / bands` values per band. More bands find less similar pairs (and cost more checks)."""
    threshold: float = Field(default=0.8, gt=0.0, le=1.0)
    """Jaccard similarity of word shingles at or above which two documents are duplicates."""
    verify: bool = False
    """Judge each candidate pair (documents sharing a band) by its exact shingle Jaccard similarity instead of the
    MinHash estimate. The estimate's error is about 1 / sqrt(num_perm) (0.09 at 128), large for short documents:
    without `verify`, pairs a little above the threshold can be missed and pairs below it removed. Costs the
    documents' shingles on disk while the op decides."""

    @model_validator(mode="after")
    def _bands_divide(self) -> "DedupNear":
        if self.num_perm % self.bands:
            raise ValueError(
                f"num_perm = {self.num_perm} is not a multiple of bands = {self.bands}; every band needs the same "
                "number of values (e.g. num_perm = 128, bands = 32)"
            )
        return self


DataOp = Annotated[
    Union[Normalize, RegexReplace, RegexFilter, FilterLength, Quality, Pii, DedupExact, DedupNear],
    Field(discriminator="op"),
]


class Split(Section):
    """Each document lands in one split, chosen by a stable hash of its text: same text, same split."""

    val: float = Field(default=0.05, ge=0.0, lt=1.0)
    """Share of documents held out for validation."""
    test: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of documents held out for the final test."""
    stratify: bool = False
    """Hold out `val` and `test` of each source separately (exact shares per source, chosen by text hash)."""

    @model_validator(mode="after")
    def _leaves_train(self) -> "Split":
        if self.val + self.test >= 1.0:
            raise ValueError(f"val + test = {self.val + self.test:g} leaves nothing to train on; keep it below 1")
        return self


class DataStep(Section):
    """Read, clean and split documents into Parquet files (train/val/test)."""

    kind: Literal["data"]
    sources: list[Source] = Field(min_length=1)
    """Where the documents come from; all sources are concatenated in order (or mixed, see `weight`)."""
    ops: list[DataOp] = []
    """Operations applied to every document, in the order written."""
    split: Split = Split()
    """How documents are divided into train / val / test."""
    on_bad_record: Literal["skip", "fail"] = "skip"
    """A record that cannot be read (malformed JSON line, empty file, non-text value, corrupt archive): `skip`
    leaves it out and counts it in the report, `fail` stops the step naming the file and line."""
    batch_mb: int = Field(default=8, ge=1, le=4096)
    """Documents are processed in batches of about this many megabytes of text, which bounds memory use (each
    worker holds about 20 times its batch at its peak)."""
    workers: int = Field(default=0, ge=0, le=MAX_PROCESSES)
    """Worker processes that run the ops on batches in parallel; 0 means one per CPU core. Results do not
    depend on it."""
