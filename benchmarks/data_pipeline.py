"""Data pipeline benchmark: speed, memory and near-dedup quality of the `data` step, next to datatrove's MinHash.

Builds a corpus of >= 200k documents from the real texts in ../shared/data (random runs of sentences from
Austen's novels, State of the Union addresses and review snippets), plants exact copies and near copies
(a few words edited) with known ground truth, and runs the standard pipeline (normalize, quality, pii,
exact + near dedup, split) through the real executor in a subprocess with `--workers` worker processes
(peak RSS: the sum over the subprocess and its workers, sampled every 20 ms). Then runs datatrove 0.10.1's
MinHash deduplication (signatures, buckets, clusters, filter) on the same JSONL with the same worker count,
and prints the ratio of documents per second. Last, a streaming run on a corpus `--stream-factor` times
larger than a resident memory limit (`--limit-mb`) that this script enforces on the step's processes
(killed past it), with near-dedup quality checked there too.

    pip install -e '.[bench]' && python benchmarks/data_pipeline.py [--docs 205000] [--workers 2]

Prints its figures; the last line is one JSON object. On the 205k-document corpus with other benchmarks
running on the 2 cores (load averages 2-7), our step took 39-54 s and datatrove 195-348 s, ratios 4.6-7.8
as the load shifted between the two halves; on a quiet machine before the step's last speed-ups, 27.8 s and
98.9 s. The streaming run (1.2 GB) takes 4-10 minutes more;
`--skip-datatrove` / `--skip-stream` leave parts out, and `--docs` sets the corpus size of both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHINGLE, BUCKETS, PER_BUCKET = 5, 14, 8
THRESHOLD = 0.7


# the corpus


def sentence_pool() -> list[str]:
    texts = [(SHARED / "pretrain" / "austen.txt").read_text()]
    texts += [p.read_text() for p in sorted((SHARED / "pretrain" / "sotu").glob("*.txt"))]
    reviews = [json.loads(line)["text"] for line in (SHARED / "classify" / "rotten_tomatoes.jsonl").open()]
    sentences = []
    for text in texts:
        flat = re.sub(r"\s+", " ", text)
        sentences += [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"])", flat) if len(s.split()) >= 4]
    return sentences + [r for r in reviews if len(r.split()) >= 4]


def edited(text: str, rng: np.random.Generator, rate: float) -> str:
    """A near copy: about `rate` of the words replaced, deleted or doubled (at least one edit)."""
    words = text.split(" ")
    edits = max(1, int(round(rate * len(words))))
    for position in rng.choice(len(words), size=min(edits, len(words)), replace=False):
        kind = rng.integers(3)
        if kind == 0:
            words[position] = words[rng.integers(len(words))]
        elif kind == 1:
            words[position] = ""
        else:
            words[position] = words[position] + " " + words[position]
    return " ".join(w for w in words if w)


def build_corpus(folder: Path, n_docs: int, seed: int, files: int = 8) -> dict:
    """JSONL files of documents with ids `g<group>-<copy>`: copy 0 is the original, planted copies share its
    group. Returns the planted counts."""
    rng = np.random.default_rng(seed)
    pool = sentence_pool()
    n_exact, n_near = n_docs // 20, n_docs // 8
    n_base = n_docs - n_exact - n_near
    lengths = np.clip(rng.lognormal(np.log(6), 0.6, n_base).astype(int), 3, 30)
    # sentences drawn at random: two originals share a sentence now and then, never most of their text
    base = [" ".join(pool[i] for i in rng.integers(0, len(pool), n)) for n in lengths]
    docs = [(f"g{k}-0", text) for k, text in enumerate(base)]
    for k, group in enumerate(rng.choice(n_base, n_exact, replace=False)):
        docs.append((f"g{group}-e{k}", base[group]))
    for k, group in enumerate(rng.choice(n_base, n_near, replace=False)):
        docs.append((f"g{group}-n{k}", edited(base[group], rng, rate=0.02)))
    order = rng.permutation(len(docs))
    folder.mkdir(parents=True, exist_ok=True)
    handles = [open(folder / f"part-{i:02d}.jsonl", "w") for i in range(files)]
    for rank, index in enumerate(order):
        doc_id, text = docs[index]
        handles[rank % files].write(json.dumps({"id": doc_id, "text": text}) + "\n")
    for handle in handles:
        handle.close()
    size = sum(p.stat().st_size for p in folder.glob("*.jsonl"))
    return {"docs": len(docs), "exact_copies": n_exact, "near_copies": n_near, "bytes": size}


# our pipeline (runs in a subprocess: `--ours CORPUS OUT`)


STANDARD_OPS = [
    {"op": "normalize", "form": "NFC"},
    {"op": "quality"},
    {"op": "pii"},
    {"op": "dedup_exact"},
    {"op": "dedup_near", "shingle_size": SHINGLE, "num_perm": 112, "bands": 28, "threshold": THRESHOLD},
]


def run_ours(corpus: Path, out: Path, batch_mb: int, workers: int) -> None:
    from llmrecipe.data.locate import sha256_file
    from llmrecipe.plan.plan import ExternalFile
    from llmrecipe.run.context import StepContext
    from llmrecipe.run.reporter import LineReporter
    from llmrecipe.steps.data import run

    files = sorted(corpus.glob("*.jsonl"))
    external = [ExternalFile(source=0, name=p.name, sha256=sha256_file(p), size=p.stat().st_size, path=str(p))
                for p in files]
    spec = {"sources": [{"path": str(corpus), "glob": "*.jsonl", "id_field": "id"}], "ops": STANDARD_OPS,
            "split": {"val": 0.01, "test": 0.01}, "on_bad_record": "skip", "batch_mb": batch_mb, "workers": workers,
            "mix_seed": None}
    out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(name="corpus", inputs={}, out_dir=out, scratch_dir=out.parent / "scratch", device="cpu",
                      reporter=LineReporter(), external=external)
    started = time.perf_counter()
    metrics = run(spec, ctx)
    seconds = time.perf_counter() - started
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "main_peak_rss_mb": main_peak, "worker_peak_rss_mb": worker_peak,
                      "metrics": metrics}))


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (the step's worker processes), in MB."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue  # the process ended while we looked
    return total


def ours_in_subprocess(corpus: Path, out: Path, batch_mb: int, workers: int, limit_mb: int | None = None) -> dict:
    """Run our pipeline in a child process. A watchdog samples the resident memory of the child and its
    worker processes together every 20 ms (their sum is the step's peak RSS) and, with `limit_mb`, kills the
    child past the limit (an address-space rlimit does not work here: allocator and thread-stack reservations
    are virtual memory far beyond what is used)."""
    # the checkout this script lives in, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, __file__, "--ours", str(corpus), str(out), str(batch_mb), str(workers)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched_peak = 0.0
    while child.poll() is None:
        rss = tree_rss_mb(child.pid)
        watched_peak = max(watched_peak, rss)
        if limit_mb and rss > limit_mb:
            child.kill()
            raise SystemExit(f"our pipeline exceeded the {limit_mb} MB memory limit ({rss:.0f} MB resident)")
        time.sleep(0.02)
    stdout, stderr = child.communicate()
    if child.returncode:
        raise SystemExit(f"our pipeline failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = watched_peak
    return result


def near_dedup_quality(out: Path) -> tuple[float, float]:
    """Precision and recall of near-duplicate removal against the planted groups.

    Of the documents that reached dedup_near, every group should keep exactly one: a removal is correct when
    the kept document stands in for a member of the same group; the expected removals are (members - 1) per
    group that reached it."""
    import polars as pl

    dropped = pl.read_parquet(out / "dropped.parquet")
    group = pl.col("id").str.extract(r"^0:(g\d+)-")
    near = dropped.filter(pl.col("stage").str.ends_with("dedup_near"))
    correct = near.filter(group == pl.col("duplicate_of").str.extract(r"^0:(g\d+)-")).height
    before_near = dropped.filter(~pl.col("stage").str.ends_with("dedup_near"))["id"]
    kept = pl.concat([pl.read_parquet(out / f"{s}.parquet", columns=["id"]) for s in ("train", "val", "test")])
    reached = pl.concat([kept["id"], near["id"]]).to_frame("id").select(group.alias("g"))
    expected = int(reached.group_by("g").len().select((pl.col("len") - 1).sum()).item())
    assert not set(before_near.to_list()) & set(near["id"].to_list())
    precision = correct / near.height if near.height else 1.0
    recall = correct / expected if expected else 1.0
    return precision, recall


# datatrove


def run_datatrove(corpus: Path, work: Path, workers: int) -> float:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class Whitespace(WordTokenizer):
        def word_tokenize(self, text, language=None):
            return text.split()

        def sent_tokenize(self, text, language=None):
            return [text]

        def span_tokenize(self, text, language=None):
            raise NotImplementedError

    config = MinhashConfig(hash_config=HashConfig(precision=64), n_grams=SHINGLE, num_buckets=BUCKETS,
                           hashes_per_bucket=PER_BUCKET)
    tasks = BUCKETS
    files = len(list(corpus.glob("*.jsonl")))

    def reader():
        return JsonlReader(str(corpus), glob_pattern="*.jsonl")

    # datatrove's English tokenizer needs spacy/NLTK downloads; on normalized text whitespace words are the same
    signature = MinhashDedupSignature(output_folder=str(work / "sigs"), config=config, language=Whitespace())
    stages = [
        LocalPipelineExecutor(pipeline=[reader(), signature], tasks=files, workers=workers, logging_dir=str(work / "l1")),
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
                              tasks=tasks, workers=workers, logging_dir=str(work / "l2")),
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(input_folder=str(work / "buckets"), output_folder=str(work / "ids"), config=config)],
                              tasks=1, logging_dir=str(work / "l3")),
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=str(work / "ids"))],
                              tasks=files, workers=workers, logging_dir=str(work / "l4")),
    ]
    started = time.perf_counter()
    for stage in stages:
        stage.run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=205_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-mb", type=int, default=8)
    parser.add_argument("--stream-factor", type=float, default=3, help="streaming corpus size / memory limit")
    parser.add_argument("--limit-mb", type=int, default=400,
                        help="resident memory limit of the streaming run (its processes together)")
    parser.add_argument("--stream-batch-mb", type=int, default=1, help="batch size of the streaming run")
    parser.add_argument("--stream-workers", type=int, default=1,
                        help="worker processes of the streaming run (each adds about 170 MB at 1 MB batches)")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="data-bench-"))
    try:
        print(f"load: {os.getloadavg()}, cpus: {os.cpu_count()}")
        started = time.perf_counter()
        planted = build_corpus(root / "corpus", args.docs, seed=0)
        mb = planted["bytes"] / 1e6
        print(f"corpus: {planted['docs']} documents, {mb:.1f} MB JSONL, {planted['exact_copies']} exact and "
              f"{planted['near_copies']} near copies planted ({time.perf_counter() - started:.1f} s to build)")
        ours = ours_in_subprocess(root / "corpus", root / "ours", args.batch_mb, args.workers)
        docs_per_s = planted["docs"] / ours["seconds"]
        precision, recall = near_dedup_quality(root / "ours")
        print(f"llmrecipe: {ours['seconds']:.1f} s, {docs_per_s:,.0f} docs/s, {mb / ours['seconds']:.1f} MB/s, "
              f"peak RSS {ours['peak_rss_mb']:.0f} MB; near-dedup precision {precision:.4f}, recall {recall:.4f}")
        print(f"  metrics: {json.dumps(ours['metrics'])}")
        datatrove_docs_per_s, datatrove_seconds = None, None
        if not args.skip_datatrove:
            datatrove_seconds = run_datatrove(root / "corpus", root / "datatrove", args.workers)
            datatrove_docs_per_s = planted["docs"] / datatrove_seconds
            print(f"datatrove MinHash ({args.workers} workers): {datatrove_seconds:.1f} s, {datatrove_docs_per_s:,.0f} docs/s")
            print(f"speed ratio (documents per second, ours / datatrove's): {docs_per_s / datatrove_docs_per_s:.2f}")
        stream = None
        if not args.skip_stream:
            stream = streaming_run(root, args)
        result = {
            "docs": planted["docs"],
            "corpus_mb": round(mb, 1),
            "workers": args.workers,
            "seconds": round(ours["seconds"], 1),
            "docs_per_s": round(docs_per_s, 1),
            "mb_per_s": round(mb / ours["seconds"], 2),
            "peak_rss_mb": round(ours["peak_rss_mb"], 1),
            "near_dup_precision": round(precision, 4),
            "near_dup_recall": round(recall, 4),
            "datatrove_docs_per_s": round(datatrove_docs_per_s, 1) if datatrove_docs_per_s else None,
            "datatrove_seconds": round(datatrove_seconds, 1) if datatrove_seconds else None,
            "speedup_vs_datatrove": round(docs_per_s / datatrove_docs_per_s, 2) if datatrove_docs_per_s else None,
        }
        if stream:
            result.update(stream)
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def streaming_run(root: Path, args) -> dict:
    """The pipeline, in small batches, on a corpus `stream_factor` times larger than the resident memory it is
    allowed (the watchdog kills it past the limit)."""
    target = args.stream_factor * args.limit_mb * 1e6
    corpus = root / "stream"
    docs = int(args.docs * target / sum(p.stat().st_size for p in (root / "corpus").glob("*.jsonl")))
    shutil.rmtree(root / "corpus", ignore_errors=True)
    shutil.rmtree(root / "ours", ignore_errors=True)
    planted = build_corpus(corpus, docs, seed=1, files=32)
    result = ours_in_subprocess(corpus, root / "stream-out", batch_mb=args.stream_batch_mb, workers=args.stream_workers,
                                limit_mb=args.limit_mb)
    mb = planted["bytes"] / 1e6
    precision, recall = near_dedup_quality(root / "stream-out")
    print(f"streaming: {planted['docs']} documents, {mb:.0f} MB ({mb / args.limit_mb:.1f}x) under a {args.limit_mb} MB "
          f"resident memory limit: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB (all processes), "
          f"near-dedup precision {precision:.4f}, recall {recall:.4f}")
    return {"stream_docs": planted["docs"], "stream_corpus_mb": round(mb, 1), "stream_limit_mb": args.limit_mb,
            "stream_peak_rss_mb": round(result["peak_rss_mb"], 1), "stream_workers": args.stream_workers,
            "stream_docs_per_s": round(planted["docs"] / result["seconds"], 1),
            "stream_near_dup_precision": round(precision, 4), "stream_near_dup_recall": round(recall, 4)}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ours":
        run_ours(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    else:
        main()
