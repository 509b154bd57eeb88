"""Reading the sources in jobs: each job reads a slice of a source's files (one file, or a byte range of a large
JSONL file, `llmrecipe.data.ranges`; all of them for a source with `max_docs`, which counts across its files) where
the engine runs it, and writes each block it parses as a Parquet file in the work folder. The step's process then
only groups the blocks, in source and file order, into shards of about a batch (`Pipeline.shards_read`): the same
blocks and the same shards as one process reading every file in turn, so the same bytes out.

A job's result (its blocks and its source log) is saved as JSON next to its blocks, renamed into place last: a
re-run skips jobs whose result exists.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from llmrecipe.data.ranges import ByteRange, file_ranges
from llmrecipe.data.read import Reader, SourceLog
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source


@dataclass
class Block:
    """A frame of documents as the reader parsed it, saved in the work folder."""

    path: Path
    rows: int
    text_bytes: int


@dataclass
class ReadResult:
    blocks: list[Block]
    log: SourceLog


@dataclass
class ReadJob:
    source: Source
    index: int
    """The source's place in the step's `sources`."""
    files: list[ExternalFile]
    number: int
    """The job's place among the step's read jobs (names its blocks)."""
    folder: Path
    policy: str
    metadata: list[str]
    downloads: Path | None
    block_bytes: int
    span: ByteRange | None = None
    """The byte range of its one file the job reads; None: all of it."""

    def result_path(self) -> Path:
        return self.folder / f"read-{self.number:06d}.json"

    def run(self) -> ReadResult:
        reader = Reader(self.source, self.index, self.policy, self.metadata, self.downloads,
                        block_bytes=self.block_bytes, span=self.span)
        blocks = []
        for frame in reader.documents(self.files):
            path = self.folder / f"read-{self.number:06d}-{len(blocks):06d}.parquet"
            frame.write_parquet(path, compression="uncompressed")  # read back once, soon: speed over size
            blocks.append(Block(path, len(frame), int(frame["text"].str.len_bytes().sum())))
        result = ReadResult(blocks, reader.log)
        partial = self.result_path().with_name(f"{self.result_path().name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"blocks": [[b.path.name, b.rows, b.text_bytes] for b in blocks],
                                       "log": reader.log.as_dict()}))
        partial.replace(self.result_path())
        return result

    def saved(self) -> ReadResult | None:
        """The result a killed run saved, if any."""
        if not self.result_path().exists():
            return None
        saved = json.loads(self.result_path().read_text())
        return ReadResult([Block(self.folder / name, rows, size) for name, rows, size in saved["blocks"]],
                          SourceLog.from_dict(saved["log"]))


def read_jobs(sources: list[Source], groups: list[list[ExternalFile]], range_bytes: int, **settings) -> list[ReadJob]:
    """The jobs reading every source's files, in source and file order, a large JSONL file in ranges of about
    `range_bytes`. `settings`: ReadJob's folder, policy, metadata, downloads and block_bytes."""
    jobs: list[ReadJob] = []
    for index, (source, files) in enumerate(zip(sources, groups)):
        if source.max_docs is not None or not files:
            slices: list[tuple[list[ExternalFile], ByteRange | None]] = [(files, None)]
        else:
            slices = [([file], span) for file in files
                      for span in file_ranges(source, file, range_bytes, settings["block_bytes"])]
        for part, span in slices:
            jobs.append(ReadJob(source, index, part, len(jobs), **settings, span=span))
    return jobs


def merged_log(logs: list[SourceLog]) -> SourceLog:
    """One source's log from its jobs' logs, in file order: what one reader of all its files would have logged."""
    whole = SourceLog(logs[0].source)
    for log in logs:
        whole.files += log.files
        whole.docs += log.docs
        whole.chars += log.chars
        whole.bad_records.update(log.bad_records)
        whole.repaired.update(log.repaired)
        for sample in log.bad_samples:
            whole.add_sample(sample)
    return whole
