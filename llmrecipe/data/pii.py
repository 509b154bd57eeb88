"""The `pii` op: personal data found by pattern, replaced with typed placeholders or dropped with its document.

E-mail, phone and IPv4 patterns are replaced by polars in one vectorized pass each. Credit-card numbers
(Luhn), IBANs (mod-97) and IPv6 addresses need a check no regex can express, so their candidates are
checked in Python, only in the documents a vectorized match singled out.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Callable

import polars as pl

from llmrecipe.data.clean import OpResult, first_reason
from llmrecipe.recipe.data import Pii

EMAIL = r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}\b"
OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"\b{OCTET}(?:\.{OCTET}){{3}}\b"
# Either an international number (+ country code, 2-5 groups) or a North American 3-3-4 one; bare digit runs
# and year ranges ("1945-1950") are not phone numbers.
PHONE = r"(?:\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}|\(?\b[2-9][0-9]{2}\)?[ .-][0-9]{3}[ .-][0-9]{4})\b"
CARD_CANDIDATE = r"\b[0-9](?:[ -]?[0-9]){12,18}\b"
IBAN_CANDIDATE = r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b"
IPV6_CANDIDATE = r"(?i)(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{0,4}"

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "credit_card": "<CREDIT_CARD>", "iban": "<IBAN>"}


def luhn_valid(candidate: str) -> bool:
    digits = [int(c) for c in candidate if c.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(digits)):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def ipv6_valid(candidate: str) -> bool:
    if candidate.count(":") < 2 or not any(c.isalnum() for c in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


CHECKED: dict[str, list[tuple[str, str, str, Callable[[str], bool]]]] = {
    "credit_card": [("[0-9]", r"[0-9][ -]?[0-9][ -]?[0-9][ -]?[0-9]", CARD_CANDIDATE, luhn_valid)],
    "iban": [("[0-9]", r"[A-Z]{2}[0-9]{2}", IBAN_CANDIDATE, iban_valid)],
    "ip": [(":", r"[0-9a-fA-F]{0,4}:[0-9a-fA-F]{0,4}:", IPV6_CANDIDATE, ipv6_valid)],
}
"""Kinds (or parts of kinds) found by candidate pattern + check, run on the candidates' documents only. The
first two patterns are ever narrower necessary conditions that pick the documents the candidate pattern is
run on: a single character (found at memchr speed), then a cheap pattern without Unicode word boundaries
(which slow Rust's regex engine several times)."""
PATTERNS = {"email": [EMAIL], "ip": [IPV4], "phone": [PHONE]}
"""Kinds (or parts of kinds) a pattern alone finds, replaced in one vectorized pass each."""
ORDER = ("email", "credit_card", "iban", "ip", "phone")
"""E-mails first (their digits must not look like phones), checked kinds before phones for the same reason."""


def pii(frame: pl.DataFrame, op: Pii) -> OpResult:
    text = frame["text"]
    counters: dict[str, int] = {}
    found: list[tuple[str, pl.Series]] = []
    for kind in (k for k in ORDER if k in op.kinds):
        text, per_doc = replace_kind(text, kind)
        counters[kind] = int(per_doc.sum())
        found.append((kind, per_doc > 0))
    if op.action == "drop":
        return OpResult(frame, drop=first_reason(found), counters=counters)
    return OpResult(frame.with_columns(text=text), counters=counters)


def replace_kind(text: pl.Series, kind: str) -> tuple[pl.Series, pl.Series]:
    """Texts with every `kind` match replaced by its placeholder, and the number of matches per document."""
    placeholder = PLACEHOLDERS[kind]
    counts = pl.Series([0] * len(text), dtype=pl.UInt32)
    for needed, prefilter, pattern, check in CHECKED.get(kind, []):
        text, found = _replace_checked(text, (needed, prefilter, pattern), check, placeholder)
        counts = counts + found
    for pattern in PATTERNS.get(kind, []):
        # counted and replaced only in the documents that match: most hold no personal data at all
        rows = text.str.contains(pattern).fill_null(False).arg_true()
        if len(rows):
            matched = text.gather(rows)
            counts = counts.scatter(rows, counts.gather(rows) + matched.str.count_matches(pattern).fill_null(0))
            text = text.clone().scatter(rows, matched.str.replace_all(pattern, placeholder))
    return text, counts


def _replace_checked(text: pl.Series, patterns: tuple[str, ...], check: Callable[[str], bool], placeholder: str):
    """Every match of the last of `patterns` that passes `check` replaced, in the documents that match each
    of `patterns` in turn."""
    rows = text.str.contains(patterns[0]).fill_null(False).arg_true()
    for narrower in patterns[1:]:
        rows = rows.gather(text.gather(rows).str.contains(narrower).fill_null(False).arg_true())
    pattern = patterns[-1]
    counts = [0] * len(text)
    if rows.is_empty():
        return text, pl.Series(counts, dtype=pl.UInt32)
    compiled = re.compile(pattern)
    rewritten = []
    for row, document in zip(rows.to_list(), text.gather(rows).to_list()):
        hits = [0]

        def substitute(match: re.Match) -> str:
            if check(match.group()):
                hits[0] += 1
                return placeholder
            return match.group()

        rewritten.append(compiled.sub(substitute, document))
        counts[row] = hits[0]
    return text.clone().scatter(rows, pl.Series(rewritten, dtype=pl.String)), pl.Series(counts, dtype=pl.UInt32)
