"""The data op registry: the `op` key of the recipe -> the function (or corpus-wide class) that applies it.

Document ops see one batch at a time and return an `OpResult` (rewritten frame, drop reasons, counters).
Corpus ops (dedup) observe every batch and then decide once which documents stay; the pipeline runs
them as barriers between passes over the batches.
"""

from __future__ import annotations

from typing import Any, Callable

import polars as pl

from llmrecipe.data.clean import OpResult, filter_length, normalize, regex_filter, regex_replace
from llmrecipe.data.dedup import ExactDedup, NearDedup
from llmrecipe.data.pii import pii
from llmrecipe.data.quality import quality

DOCUMENT_OPS: dict[str, Callable[[pl.DataFrame, Any], OpResult]] = {
    "normalize": normalize,
    "regex_replace": regex_replace,
    "regex_filter": regex_filter,
    "filter_length": filter_length,
    "quality": quality,
    "pii": pii,
}
CORPUS_OPS: dict[str, type] = {
    "dedup_exact": ExactDedup,
    "dedup_near": NearDedup,
}
OPS = {**DOCUMENT_OPS, **CORPUS_OPS}
"""Every op name; a test keeps it in sync with the recipe's DataOp union."""

HINTS = {
    "normalize": "check the documents it receives",
    "regex_filter": "check its pattern and `keep`",
    "filter_length": "loosen its thresholds (min_chars, max_chars, min_words, max_words, min_lines)",
    "quality": "loosen the rule above that removed most, or turn it off with `off = [\"RULE\"]`; a source read as "
               "one document per file (`unit = \"file\"`, e.g. a whole book) is often past max_words: read it with "
               "`unit = \"paragraph\"`",
    "pii": "use action = \"replace\" to keep documents with personal data (it is masked)",
    "dedup_exact": "check the documents it receives (are they all copies of one text?)",
    "dedup_near": "raise its threshold or check the documents it receives",
}
"""What to try when an op removed every document."""
