"""Bytes -> text for documents: invalid UTF-8 and NUL bytes are repaired and counted, never dropped.

Invalid UTF-8 almost always means a file written in Windows-1252 or Latin-1, so each byte that is not part
of a valid UTF-8 sequence is read in Windows-1252 (Latin-1 for the five bytes it leaves undefined): `caf\\xe9`
becomes `café` rather than `caf\\ufffd`.
"""

from __future__ import annotations

import codecs
from collections import Counter

HANDLER = "llmrecipe-cp1252"
_UNDEFINED_CP1252 = {0x81, 0x8D, 0x8F, 0x90, 0x9D}
_repaired_bytes = [0]  # one writer (the reading loop), reset per call: the error handler has no other state slot


def _cp1252_bytes(error: UnicodeDecodeError) -> tuple[str, int]:
    bad = error.object[error.start : error.end]
    _repaired_bytes[0] += len(bad)
    text = "".join(chr(b) if b in _UNDEFINED_CP1252 else bytes([b]).decode("cp1252") for b in bad)
    return text, error.end


codecs.register_error(HANDLER, _cp1252_bytes)


def decode(content: bytes, repairs: Counter) -> str:
    """UTF-8 text of `content` without a leading byte-order mark or NUL bytes; counts what it repaired."""
    nul = content.count(b"\x00")
    if nul:
        content = content.replace(b"\x00", b"")
        repairs["nul_bytes"] += nul
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError:
        _repaired_bytes[0] = 0
        text = content.decode("utf-8-sig", errors=HANDLER)
        repairs["invalid_utf8_bytes"] += _repaired_bytes[0]
        return text
