"""A large uncompressed JSONL file read by several jobs, each a byte range of it.

The reader cuts a file into blocks at the last newline before each multiple of its block size (`read.blocks`):
a line belongs to the block its newline falls in. Ranges start and end at multiples of the block size and own the
lines whose newline falls in them (the last range also owns a final line without one), so a range's job cuts
exactly the blocks that reading the whole file cuts there: the same documents, ids, bad records and repairs.

A job needs the number of its first line (JSONL ids and error messages carry line numbers), so one cheap pass over
the file, before its jobs, counts the newlines before each range and checks the file's sha256 (a range job sees
only its own bytes). Files the reader rejects whole (binary, or only whitespace) are left to one job.
Compressed files, text split into paragraphs or lines (whose ids count non-blank units, which only decoding can
tell) and url sources (downloaded inside the job) are read whole.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from llmrecipe.data.formats import file_format, split_compression
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source


@dataclass
class ByteRange:
    start: int
    """A multiple of the block size."""
    end: int
    """A multiple of the block size, or the file's size."""
    first_line: int
    """Newlines in the file before `start`: the number (from 0) of the range's first line."""
    last: bool
    """Whether the range ends the file (then it also owns a final line without a newline)."""


def file_ranges(source: Source, file: ExternalFile, range_bytes: int, block_bytes: int) -> list[ByteRange | None]:
    """The ranges the file is read in, or `[None]` when one job reads it whole."""
    step = max(1, range_bytes // block_bytes) * block_bytes
    splittable = (source.url is None and split_compression(file.name)[1] is None
                  and file_format(source.format, file.name) == "jsonl")
    if not splittable or file.size <= step:
        return [None]
    return indexed_ranges(file, step, block_bytes) or [None]


def indexed_ranges(file: ExternalFile, step: int, block_bytes: int) -> list[ByteRange] | None:
    """One pass over the file: its ranges of `step` bytes with their first lines, after checking its sha256;
    None if the file is binary or holds only whitespace (the reader reports such a file once, reading it whole)."""
    from llmrecipe.data.read import SNIFF_BYTES, changed_after_plan, looks_binary, opened  # read imports this module

    digest, starts, newlines, head, head_done, blank = hashlib.sha256(), [], 0, b"", False, True
    with opened(file.path) as stream:
        offset = 0
        while piece := stream.read(block_bytes):
            if offset % step == 0:
                starts.append((offset, newlines))
            digest.update(piece)
            if not head_done:  # the first block's start, which the reader sniffs for binary content
                cut = piece.rfind(b"\n")
                head = (head + (piece if cut < 0 else piece[: cut + 1]))[:SNIFF_BYTES]
                head_done = cut >= 0 or len(head) >= SNIFF_BYTES
            blank = blank and piece.isspace()
            newlines += piece.count(b"\n")
            offset += len(piece)
    if digest.hexdigest() != file.sha256:
        raise changed_after_plan(file.path)
    if blank or looks_binary(head):
        return None
    ends = [start for start, _ in starts[1:]] + [offset]
    return [ByteRange(start, end, lines, end == offset) for (start, lines), end in zip(starts, ends)]


def range_pieces(raw: BinaryIO, span: ByteRange, size: int) -> Iterator[bytes]:
    """The bytes a range's blocks are cut from: the start of the line running into the range, then the range in
    reads of `size`, which end where the whole file's reads end."""
    begin = line_start(raw, span.start)
    raw.seek(begin)
    yield raw.read(span.start - begin)
    left = span.end - span.start
    while left > 0 and (piece := raw.read(min(size, left))):
        left -= len(piece)
        yield piece


def line_start(raw: BinaryIO, position: int) -> int:
    """Where the line holding the byte before `position` starts: just after the last newline before it."""
    back = 4096
    while position > 0:
        low = max(0, position - back)
        raw.seek(low)
        cut = raw.read(position - low).rfind(b"\n")
        if cut >= 0:
            return low + cut + 1
        if low == 0:
            break
        back *= 4
    return 0
