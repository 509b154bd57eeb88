"""The data step on a corpus that is one large JSONL file: read whole by one job, against read in byte ranges
by all the workers: the reading alone, then the whole step. Same corpus, ops and workers as `data_pipeline` (whose corpus builder it uses), one file instead of
eight; the two ways alternate, `--rounds` times each, and their output Parquet files must match byte for byte.

Prints its figures; the last line is one JSON object. On a shared machine compare the two within one run.
Not measured: files on object storage (where one job reading a whole file is slower still), compressed files
(read whole either way).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.data_pipeline import EQUAL_BANDING, build_corpus, standard_ops

OUTPUTS = ("train.parquet", "val.parquet", "test.parquet", "dropped.parquet")


def run_step(corpus: Path, out: Path, batch_mb: int, workers: int, ranges: bool) -> tuple[float, dict]:
    """Seconds the step took, and its outputs' sha256."""
    from llmrecipe.data import pipeline
    from llmrecipe.digests import sha256_file
    from llmrecipe.plan.plan import ExternalFile
    from llmrecipe.run.context import StepContext
    from llmrecipe.run.reporter import LineReporter
    from llmrecipe.steps.data import run

    default = pipeline.RANGE_BATCHES
    pipeline.RANGE_BATCHES = default if ranges else 1 << 30  # ranges larger than any file: one job per file
    try:
        files = [ExternalFile(source=0, name=p.name, sha256=sha256_file(p), size=p.stat().st_size, path=str(p))
                 for p in sorted(corpus.glob("*.jsonl"))]
        spec = {"sources": [{"path": str(corpus), "glob": "*.jsonl", "id_field": "id"}],
                "ops": standard_ops(EQUAL_BANDING), "split": {"val": 0.01, "test": 0.01}, "on_bad_record": "skip",
                "batch_mb": batch_mb, "workers": workers, "mix_seed": None}
        out.mkdir(parents=True)
        ctx = StepContext(name="corpus", inputs={}, out_dir=out, scratch_dir=out / "scratch", device="cpu",
                          reporter=LineReporter(), external=files)
        started = time.perf_counter()
        run(spec, ctx)
        seconds = time.perf_counter() - started
    finally:
        pipeline.RANGE_BATCHES = default
    return seconds, {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in OUTPUTS}


class Nothing:
    """A job that warms a worker up, so the reading times leave the workers' start out."""

    def run(self) -> None:
        return None


def read_step(corpus: Path, work: Path, batch_mb: int, workers: int, ranges: bool) -> tuple[float, int]:
    """Seconds the reading alone took (the read jobs, run as the step runs them, first pass left out), and jobs."""
    from llmrecipe.data.pipeline import RANGE_BATCHES
    from llmrecipe.data.read import BLOCK_BYTES
    from llmrecipe.data.readjobs import read_jobs
    from llmrecipe.data.workers import Workers
    from llmrecipe.digests import sha256_file
    from llmrecipe.plan.plan import ExternalFile
    from llmrecipe.recipe.data import Source

    files = [ExternalFile(source=0, name=p.name, sha256=sha256_file(p), size=p.stat().st_size, path=str(p))
             for p in sorted(corpus.glob("*.jsonl"))]
    work.mkdir(parents=True)
    batch_bytes = batch_mb << 20
    pool = Workers(workers)
    for _ in pool.run([Nothing() for _ in range(2 * workers)]):
        pass
    started = time.perf_counter()
    range_bytes = (RANGE_BATCHES if ranges else 1 << 30) * batch_bytes
    jobs = read_jobs([Source(path=str(corpus), id_field="id")], [files], range_bytes, folder=work, policy="skip",
                     metadata=[], downloads=None, block_bytes=min(BLOCK_BYTES, batch_bytes))
    for _ in pool.run(jobs):
        pass
    seconds = time.perf_counter() - started
    pool.close()
    shutil.rmtree(work)
    return seconds, len(jobs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=205_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-mb", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="data-one-file-"))
    try:
        result = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
        planted = build_corpus(root / "corpus", args.docs, seed=0, files=1)
        print(f"corpus: one file of {planted['docs']} documents, {planted['bytes'] / 1e6:.1f} MB; "
              f"{args.workers} workers, {args.batch_mb} MB batches; load {os.getloadavg()}")
        reads: dict[str, list[float]] = {"whole": [], "ranges": []}
        for round_number in range(args.rounds):
            for way in reads:
                seconds, jobs = read_step(root / "corpus", root / "read", args.batch_mb, args.workers, way == "ranges")
                reads[way].append(seconds)
                print(f"round {round_number + 1}, reading only, {way}: {jobs} jobs, {seconds:.1f} s")
        read_whole, read_ranges = statistics.median(reads["whole"]), statistics.median(reads["ranges"])
        print(f"reading only, median: whole {read_whole:.1f} s, in ranges {read_ranges:.1f} s: "
              f"{read_whole / read_ranges:.2f}x")
        times: dict[str, list[float]] = {"whole": [], "ranges": []}
        digests = {}
        for round_number in range(args.rounds):
            for way in times:
                seconds, digests[way] = run_step(root / "corpus", root / f"{way}-{round_number}", args.batch_mb,
                                                 args.workers, ranges=way == "ranges")
                times[way].append(seconds)
                print(f"round {round_number + 1}, {way}: {seconds:.1f} s")
                shutil.rmtree(root / f"{way}-{round_number}")
        if digests["whole"] != digests["ranges"]:
            raise SystemExit(f"outputs differ: {digests}")
        whole, ranges = statistics.median(times["whole"]), statistics.median(times["ranges"])
        print(f"median: read whole {whole:.1f} s, in ranges {ranges:.1f} s: {whole / ranges:.2f}x; outputs identical")
        result.update(docs=planted["docs"], corpus_mb=round(planted["bytes"] / 1e6, 1), workers=args.workers,
                      batch_mb=args.batch_mb, whole_seconds=[round(t, 2) for t in times["whole"]],
                      ranges_seconds=[round(t, 2) for t in times["ranges"]], speedup=round(whole / ranges, 2),
                      identical_outputs=True,
                      read_whole_seconds=[round(t, 2) for t in reads["whole"]],
                      read_ranges_seconds=[round(t, 2) for t in reads["ranges"]],
                      read_speedup=round(read_whole / read_ranges, 2), load_average_at_end=[round(x, 2) for x in os.getloadavg()])
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
