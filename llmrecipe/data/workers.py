"""The data step's jobs (shard jobs, dedup stage jobs: anything with a `run()`) run by worker processes, results
handed back in job order.

The ops are CPU-bound Python/numpy/polars code that holds one core per batch, so separate processes (not
threads) use the machine. Workers are spawned, not forked: a fork copies polars' thread pool in whatever
state it is and can deadlock. A stage with a single job, or a step asked for one worker, runs in-process.

Each worker gets an equal share of the cores for polars' thread pool (one each when there are as many
workers as cores): a pool per worker sized to the whole machine oversubscribes the cores, and its idle
threads spin, which made the passes about 15-20% slower on 2 cores with 2 workers.

Workers also keep freed memory a while instead of handing it back to the kernel at once (`ALLOCATOR`): a batch's
arrays are freed and allocated again for the next batch, and faulting their pages in anew each time spent about a
third of the workers' CPU time in the kernel (10-15% of the step's time on 2 cores).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from itertools import chain, islice
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, Iterable, Iterator, Protocol

from llmrecipe.host import core_count

THREADS_VARIABLE = "POLARS_MAX_THREADS"
"""Read by polars once, when a process imports it: set while the workers are spawned."""
JEMALLOC_VARIABLE = "_RJEM_MALLOC_CONF"
"""polars' allocator's settings (jemalloc, its names prefixed _RJEM_). polars puts its own first when imported,
then what the variable held: so the variable holds polars' defaults in every process that imported polars."""
POLARS_JEMALLOC_DEFAULTS = "dirty_decay_ms:500,muzzy_decay_ms:1000"
ALLOCATOR = {
    # jemalloc: unused pages returned after 10 s, not after half a second
    JEMALLOC_VARIABLE: "dirty_decay_ms:10000,muzzy_decay_ms:10000",
    # glibc's (numpy's arrays): blocks up to 64 MiB from the heap rather than fresh mappings, and the heap trimmed
    # only past 256 MiB free, so a batch's arrays reuse the last batch's pages
    "MALLOC_MMAP_THRESHOLD_": str(64 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(256 << 20),
}
"""Allocator settings of the worker processes, read when a process starts (a value the user set wins)."""
AHEAD = 2
"""Jobs in flight per worker: enough to keep each busy while the main process merges, few enough that
finished results waiting their turn stay a handful of batches."""


class Job(Protocol):
    def run(self) -> Any:
        """Does the job's work; the result crosses back to the step's process."""


def run_job(job: Job) -> Any:
    return job.run()


def engine_workers(engine: str, count: int, ray_address: str | None, batch_mb: int):
    """What runs a step's jobs: local worker processes, or Ray tasks (`llmrecipe.data.ray_engine`, imported
    only then). Both answer `run(jobs)` with each job's result in job order."""
    if engine == "ray":
        from llmrecipe.data.ray_engine import RayWorkers

        return RayWorkers(ray_address, batch_mb)
    return Workers(count)


def worker_environment(threads: int) -> dict[str, str]:
    """The variables a worker process starts with, beyond the step's own: polars' thread count and `ALLOCATOR`,
    each as the user set it in this process's environment, if they did."""
    wanted = {THREADS_VARIABLE: str(threads), **ALLOCATOR}
    found = {name: os.environ.get(name, value) for name, value in wanted.items()}
    # jemalloc's settings are a list, later ones winning: ours, then the user's (polars puts its own first)
    users = os.environ.get(JEMALLOC_VARIABLE, "").removeprefix(POLARS_JEMALLOC_DEFAULTS).lstrip(",")
    found[JEMALLOC_VARIABLE] = ",".join(filter(None, [ALLOCATOR[JEMALLOC_VARIABLE], users]))
    return found


def worker_count(asked: int) -> int:
    """`asked`, or when it is 0 one per CPU core this process may run on."""
    return asked or core_count()


class Workers:
    def __init__(self, count: int):
        self.count = worker_count(count)
        self._pool: ProcessPoolExecutor | None = None
        self._saved: dict[str, str | None] = {}
        """The variables set in this process's environment for the workers, with their values before (put back
        when the pool closes)."""

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        """Each job with its result, in job order. Jobs are taken from `jobs` as room frees up, so they may be
        made (their shards read) while earlier ones run."""
        jobs = iter(jobs)
        first = list(islice(jobs, 2))
        if self.count <= 1 or len(first) <= 1:
            for job in chain(first, jobs):
                yield job, job.run()
            return
        pool = self._start()
        window: deque[tuple[Job, Future]] = deque()
        for job in chain(first, jobs):
            window.append((job, pool.submit(run_job, job)))
            if len(window) >= AHEAD * self.count:
                done, future = window.popleft()
                yield done, future.result()
        while window:
            done, future = window.popleft()
            yield done, future.result()

    def start(self) -> None:
        """Spawn the worker processes now, when there will be work for several: they start (import polars and
        the ops) while this process goes on reading."""
        if self.count > 1:
            self._start()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # Workers are spawned as jobs are submitted, so the variables stay set until the pool closes. This
            # process's polars and allocators read theirs long ago and are unaffected.
            wanted = worker_environment(max(1, core_count() // self.count))
            self._saved = {name: os.environ.get(name) for name in wanted}
            os.environ.update(wanted)
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"))
            for _ in range(self.count):
                self._pool.submit(warm_up)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            for name, value in self._saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            self._saved = {}


def warm_up() -> None:
    """A first job for a fresh worker: importing the ops is most of its start-up."""
    import llmrecipe.data.ops  # noqa: F401
