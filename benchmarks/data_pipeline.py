"""Data pipeline benchmark: speed, memory and dedup quality of the `data` step, next to datatrove's MinHash.

Builds a corpus of >= 200k documents from the real texts in ../shared/data (random runs of sentences from
Austen's novels, State of the Union addresses and review snippets), plants exact copies and near copies
(a few words edited) with known ground truth, and runs the standard pipeline (normalize, quality, pii,
exact + near dedup, split) through the real executor in a subprocess with `--workers` worker processes
(peak RSS: the sum over the subprocess and its workers, sampled every 20 ms, and each process's own peak).
Both sides use the same LSH banding, datatrove's default (14 bands of 8 hashes over 5-word shingles); our step
runs once more at its own default banding (32 x 4) for its quality. Then datatrove 0.10.1's MinHash
deduplication (signatures, buckets, clusters, filter, writing the kept documents) runs on the same JSONL with
the same worker count, and the script prints the ratio of documents per second and each side's dedup
precision and recall against the planted groups. With `--engine ray` our step also runs on a Ray instance of
`--workers` CPUs (started beforehand and timed apart), checked byte for byte against the local engine's
outputs. Last, a streaming run on a corpus `--stream-factor` times larger than a resident memory limit
(`--limit-mb`) that this script enforces on the step's processes (killed past it); on Ray, larger than the
memory each task asks for.

    pip install -e '.[bench]' && python benchmarks/data_pipeline.py [--docs 205000] [--workers 2] [--engine ray]

Prints its figures; the last line is one JSON object. Timings on a shared machine swing with its load: compare
only figures of one run, and read the load averages it prints. The streaming run (1.2 GB) takes 4-10 minutes
more; `--skip-datatrove` / `--skip-default-banding` / `--skip-stream` leave parts out, and `--docs` sets the
corpus size of both sides.
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
"""datatrove's MinHash defaults (MinhashConfig: 5-grams, 14 buckets of 8 hashes); ours runs with the same banding."""
THRESHOLD = 0.7
DEFAULT_BANDING = {"num_perm": 128, "bands": 32}
"""Our dedup_near's own default banding (32 bands of 4 values), run once more for its quality."""


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


EQUAL_BANDING = {"num_perm": BUCKETS * PER_BUCKET, "bands": BUCKETS}


def standard_ops(banding: dict) -> list[dict]:
    return [
        {"op": "normalize", "form": "NFC"},
        {"op": "quality"},
        {"op": "pii"},
        {"op": "dedup_exact"},
        {"op": "dedup_near", "shingle_size": SHINGLE, **banding, "threshold": THRESHOLD},
    ]


STANDARD_OPS = standard_ops(EQUAL_BANDING)


def run_ours(corpus: Path, out: Path, batch_mb: int, workers: int, engine: str = "local", banding: str = "equal") -> None:
    from llmrecipe.digests import sha256_file
    from llmrecipe.plan.plan import ExternalFile
    from llmrecipe.run.context import StepContext
    from llmrecipe.run.reporter import LineReporter
    from llmrecipe.steps.data import run

    files = sorted(corpus.glob("*.jsonl"))
    external = [ExternalFile(source=0, name=p.name, sha256=sha256_file(p), size=p.stat().st_size, path=str(p))
                for p in files]
    ops = standard_ops(EQUAL_BANDING if banding == "equal" else DEFAULT_BANDING)
    spec = {"sources": [{"path": str(corpus), "glob": "*.jsonl", "id_field": "id"}], "ops": ops,
            "split": {"val": 0.01, "test": 0.01}, "on_bad_record": "skip", "batch_mb": batch_mb, "workers": workers,
            "mix_seed": None, "engine": engine, "ray_address": None}
    ray_start_s = None
    if engine == "ray":  # a running cluster, as engine = "ray" is meant to find one: its start is timed apart
        import ray

        started = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(name="corpus", inputs={}, out_dir=out, scratch_dir=out.parent / "scratch", device="cpu",
                      reporter=LineReporter(), external=external)
    started = time.perf_counter()
    metrics = run(spec, ctx)
    seconds = time.perf_counter() - started
    main_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "main_peak_rss_mb": main_peak, "worker_peak_rss_mb": worker_peak,
                      "metrics": metrics, "ray_start_s": ray_start_s}))


def tree_rss_mb(pid: int, peaks: dict | None = None) -> float:
    """Resident memory of a process and all its descendants (the step's worker processes, or the Ray processes
    it started), in MB; with `peaks`, each process's highest figure so far by pid (with its name)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
            total += rss
            if peaks is not None:
                name = process_name(Path(f"/proc/{current}/cmdline").read_bytes())
                peaks[current] = (name, max(rss, peaks.get(current, ("", 0.0))[1]))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue  # the process ended while we looked
    return total


def process_name(cmdline: bytes) -> str:
    """What a process is, from its command line: a Ray process's title, else the program and its first arguments."""
    argv = [part.decode(errors="replace") for part in cmdline.split(b"\0") if part]
    if not argv:
        return "?"
    if argv[0].startswith("ray::") or len(argv) == 1:
        return argv[0][:60]
    return " ".join([Path(argv[0]).name, *argv[1:3]])[:60]


def ours_in_subprocess(corpus: Path, out: Path, batch_mb: int, workers: int, limit_mb: int | None = None,
                       engine: str = "local", banding: str = "equal") -> dict:
    """Run our pipeline in a child process. A watchdog samples the resident memory of the child and its
    worker processes together every 20 ms (their sum is the step's peak RSS) and, with `limit_mb`, kills the
    child past the limit (an address-space rlimit does not work here: allocator and thread-stack reservations
    are virtual memory far beyond what is used)."""
    # the checkout this script lives in, whatever is installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    child = subprocess.Popen([sys.executable, __file__, "--ours", str(corpus), str(out), str(batch_mb), str(workers),
                              engine, banding], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    watched_peak, peaks = 0.0, {}
    while child.poll() is None:
        rss = tree_rss_mb(child.pid, peaks)
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
    largest = sorted(peaks.values(), key=lambda peak: -peak[1])[:6]
    result["process_peaks_mb"] = [[name, round(mb, 1)] for name, mb in largest]
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


def group_quality(reached: "pl.Series", kept: "pl.Series") -> tuple[float, float]:
    """Precision and recall of duplicate removal (exact and near together) against the planted groups, from the
    ids that reached deduplication and the ids it kept: of a group's m members, k kept, min(m - k, m - 1)
    removals are right (every copy but one may go) and the rest wrong; m - 1 removals were expected. The same
    measure for both sides, without needing to know which document replaced which."""
    import polars as pl

    group = r"^(?:\d+:)?(g\d+)-"
    members = reached.str.extract(group).value_counts(name="m")
    kept_counts = kept.str.extract(group).value_counts(name="k")
    name = members.columns[0]
    table = members.join(kept_counts, on=name, how="left").with_columns(pl.col("k").fill_null(0))
    removed = table["m"] - table["k"]
    correct = pl.select(pl.min_horizontal(removed, table["m"] - 1)).to_series()
    return (float(correct.sum() / removed.sum()) if removed.sum() else 1.0,
            float(correct.sum() / (table["m"] - 1).sum()) if (table["m"] - 1).sum() else 1.0)


def our_group_quality(out: Path) -> tuple[float, float]:
    import polars as pl

    dropped = pl.read_parquet(out / "dropped.parquet")
    deduplicated = dropped.filter(pl.col("stage").str.contains("dedup_"))["id"]
    kept = pl.concat([pl.read_parquet(out / f"{s}.parquet", columns=["id"]) for s in ("train", "val", "test")])["id"]
    return group_quality(pl.concat([kept, deduplicated]), kept)


def output_digests(out: Path) -> dict[str, str]:
    import hashlib

    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest()
            for name in ("train.parquet", "val.parquet", "test.parquet", "dropped.parquet", "stats.json")}


# datatrove


def run_datatrove(corpus: Path, work: Path, workers: int) -> float:
    """datatrove's MinHash deduplication with its default banding, writing the kept documents; returns seconds."""
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster,
                                                  MinhashDedupFilter, MinhashDedupSignature)
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
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
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(input_folder=str(work / "ids")),
                                        JsonlWriter(str(work / "kept"), compression=None)],
                              tasks=files, workers=workers, logging_dir=str(work / "l4")),
    ]
    started = time.perf_counter()
    for stage in stages:
        stage.run()
    return time.perf_counter() - started


def datatrove_quality(corpus: Path, work: Path) -> tuple[float, float]:
    import polars as pl

    reached = pl.concat([pl.read_ndjson(path, schema={"id": pl.String})["id"] for path in sorted(corpus.glob("*.jsonl"))])
    kept = pl.concat([pl.read_ndjson(path, schema={"id": pl.String})["id"] for path in sorted((work / "kept").glob("*.jsonl"))])
    return group_quality(reached, kept)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--docs", type=int, default=205_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-mb", type=int, default=8)
    parser.add_argument("--engine", choices=["local", "ray"], default="local",
                        help="ray: also run our step on a Ray instance of --workers CPUs, and stream on Ray")
    parser.add_argument("--stream-factor", type=float, default=3, help="streaming corpus size / memory limit")
    parser.add_argument("--limit-mb", type=int, default=400,
                        help="resident memory limit of the local streaming run (its processes together)")
    parser.add_argument("--stream-batch-mb", type=int, default=1, help="batch size of the streaming run")
    parser.add_argument("--stream-workers", type=int, default=1,
                        help="worker processes of the local streaming run (each adds about 170 MB at 1 MB batches)")
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--skip-default-banding", action="store_true")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="data-bench-"))
    try:
        result = {"load_average_at_start": [round(x, 2) for x in os.getloadavg()]}
        print(f"load: {os.getloadavg()}, cpus: {os.cpu_count()}")
        print("not measured: datatrove's other stages (it runs MinHash only; ours also normalizes, filters by quality, "
              "masks personal data and splits); a cluster larger than this machine")
        started = time.perf_counter()
        planted = build_corpus(root / "corpus", args.docs, seed=0)
        mb = planted["bytes"] / 1e6
        print(f"corpus: {planted['docs']} documents, {mb:.1f} MB JSONL, {planted['exact_copies']} exact and "
              f"{planted['near_copies']} near copies planted ({time.perf_counter() - started:.1f} s to build)")
        result.update(docs=planted["docs"], corpus_mb=round(mb, 1), workers=args.workers,
                      banding=f"{BUCKETS} bands x {PER_BUCKET} rows, {SHINGLE}-word shingles")
        ours = ours_in_subprocess(root / "corpus", root / "ours", args.batch_mb, args.workers)
        docs_per_s = planted["docs"] / ours["seconds"]
        precision, recall = near_dedup_quality(root / "ours")
        group_p, group_r = our_group_quality(root / "ours")
        print(f"llmrecipe (local, {BUCKETS}x{PER_BUCKET} banding): {ours['seconds']:.1f} s, {docs_per_s:,.0f} docs/s, "
              f"{mb / ours['seconds']:.1f} MB/s, peak RSS {ours['peak_rss_mb']:.0f} MB; near-dedup precision "
              f"{precision:.4f}, recall {recall:.4f}; all dedup precision {group_p:.4f}, recall {group_r:.4f}")
        print(f"  largest processes (peak RSS MB): {ours['process_peaks_mb']}")
        print(f"  metrics: {json.dumps(ours['metrics'])}")
        result.update(seconds=round(ours["seconds"], 1), docs_per_s=round(docs_per_s, 1),
                      mb_per_s=round(mb / ours["seconds"], 2), peak_rss_mb=round(ours["peak_rss_mb"], 1),
                      process_peaks_mb=ours["process_peaks_mb"], near_dup_precision=round(precision, 4),
                      near_dup_recall=round(recall, 4), dedup_precision=round(group_p, 4), dedup_recall=round(group_r, 4))
        if args.engine == "ray":
            result.update(ray_figures(root, args, planted, ours))
        if not args.skip_default_banding:
            default = ours_in_subprocess(root / "corpus", root / "ours-default", args.batch_mb, args.workers,
                                         banding="default")
            group_p, group_r = our_group_quality(root / "ours-default")
            print(f"llmrecipe at its default banding (32x4): {default['seconds']:.1f} s; all dedup precision "
                  f"{group_p:.4f}, recall {group_r:.4f}")
            result.update(default_banding_seconds=round(default["seconds"], 1),
                          default_banding_dedup_precision=round(group_p, 4), default_banding_dedup_recall=round(group_r, 4))
            shutil.rmtree(root / "ours-default", ignore_errors=True)
        if not args.skip_datatrove:
            datatrove_seconds = run_datatrove(root / "corpus", root / "datatrove", args.workers)
            datatrove_docs_per_s = planted["docs"] / datatrove_seconds
            dt_p, dt_r = datatrove_quality(root / "corpus", root / "datatrove")
            print(f"datatrove MinHash ({args.workers} workers, its default {BUCKETS}x{PER_BUCKET} banding, writing the kept "
                  f"documents): {datatrove_seconds:.1f} s, {datatrove_docs_per_s:,.0f} docs/s; all dedup precision "
                  f"{dt_p:.4f}, recall {dt_r:.4f}")
            print(f"speed ratio (documents per second, ours / datatrove's): {docs_per_s / datatrove_docs_per_s:.2f}")
            result.update(datatrove_seconds=round(datatrove_seconds, 1), datatrove_docs_per_s=round(datatrove_docs_per_s, 1),
                          datatrove_dedup_precision=round(dt_p, 4), datatrove_dedup_recall=round(dt_r, 4),
                          speedup_vs_datatrove=round(docs_per_s / datatrove_docs_per_s, 2))
        if not args.skip_stream:
            result.update(streaming_run(root, args))
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def ray_figures(root: Path, args, planted: dict, local: dict) -> dict:
    """Our step on a Ray instance of --workers CPUs (started first, timed apart), on the same corpus: its time
    against the local engine's, and whether its outputs are the local engine's bytes."""
    ray = ours_in_subprocess(root / "corpus", root / "ours-ray", args.batch_mb, args.workers, engine="ray")
    same = output_digests(root / "ours") == output_digests(root / "ours-ray")
    ratio = ray["seconds"] / local["seconds"]
    print(f"llmrecipe on Ray ({args.workers} CPUs): {ray['seconds']:.1f} s, {planted['docs'] / ray['seconds']:,.0f} docs/s "
          f"({ratio:.2f}x the local engine's time; Ray's start {ray['ray_start_s']:.1f} s not counted), peak RSS "
          f"{ray['peak_rss_mb']:.0f} MB (all processes, Ray's own included); outputs byte-identical: {same}")
    print(f"  largest processes (peak RSS MB): {ray['process_peaks_mb']}")
    shutil.rmtree(root / "ours-ray", ignore_errors=True)
    return {"ray_seconds": round(ray["seconds"], 1), "ray_docs_per_s": round(planted["docs"] / ray["seconds"], 1),
            "ray_over_local_time": round(ratio, 2), "ray_start_s": round(ray["ray_start_s"], 1),
            "ray_peak_rss_mb": round(ray["peak_rss_mb"], 1), "ray_process_peaks_mb": ray["process_peaks_mb"],
            "ray_byte_identical": same}


def streaming_run(root: Path, args) -> dict:
    """The pipeline, in small batches, on a corpus `stream_factor` times larger than the resident memory it is
    allowed: on the local engine the watchdog kills it past the limit; on Ray (whose own processes take a few
    hundred MB) each task asks for 20 x the batch and the figure is each process's peak."""
    target = args.stream_factor * args.limit_mb * 1e6
    corpus = root / "stream"
    docs = int(args.docs * target / sum(p.stat().st_size for p in (root / "corpus").glob("*.jsonl")))
    for folder in ("corpus", "ours", "datatrove"):
        shutil.rmtree(root / folder, ignore_errors=True)
    planted = build_corpus(corpus, docs, seed=1, files=32)
    ray = args.engine == "ray"
    result = ours_in_subprocess(corpus, root / "stream-out", batch_mb=args.stream_batch_mb,
                                workers=args.workers if ray else args.stream_workers,
                                limit_mb=None if ray else args.limit_mb, engine=args.engine)
    mb = planted["bytes"] / 1e6
    precision, recall = near_dedup_quality(root / "stream-out")
    bound = (f"Ray tasks asking for {20 * args.stream_batch_mb} MB each" if ray
             else f"a {args.limit_mb} MB resident memory limit ({mb / args.limit_mb:.1f}x)")
    print(f"streaming ({args.engine}): {planted['docs']} documents, {mb:.0f} MB under {bound}: {result['seconds']:.1f} s, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB (all processes), largest {result['process_peaks_mb'][:3]}; "
          f"near-dedup precision {precision:.4f}, recall {recall:.4f}")
    return {"stream_engine": args.engine, "stream_docs": planted["docs"], "stream_corpus_mb": round(mb, 1),
            "stream_limit_mb": None if ray else args.limit_mb, "stream_peak_rss_mb": round(result["peak_rss_mb"], 1),
            "stream_process_peaks_mb": result["process_peaks_mb"],
            "stream_workers": args.workers if ray else args.stream_workers,
            "stream_docs_per_s": round(planted["docs"] / result["seconds"], 1),
            "stream_near_dup_precision": round(precision, 4), "stream_near_dup_recall": round(recall, 4)}


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--ours":
        run_ours(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7])
    else:
        main()
