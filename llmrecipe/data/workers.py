"""The data step's jobs (shard jobs, dedup stage jobs: anything with a `run()`) run by worker processes, results
handed back in job order.

The ops are CPU-bound Python/numpy/polars code that holds one core per batch, so separate processes (not
threads) use the machine. Workers are spawned, not forked: a fork copies polars' thread pool in whatever
state it is and can deadlock. A stage with a single job, or a step asked for one worker, runs in-process.

Each worker gets an equal share of the cores for polars' thread pool (one each when there are as many
workers as cores): a pool per worker sized to the whole machine oversubscribes the cores, and its idle
threads spin, which made the passes about 15-20% slower on 2 cores with 2 workers.
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


def worker_count(asked: int) -> int:
    """`asked`, or when it is 0 one per CPU core this process may run on."""
    return asked or core_count()


class Workers:
    def __init__(self, count: int):
        self.count = worker_count(count)
        self._pool: ProcessPoolExecutor | None = None
        self._saved_threads: str | None = None

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
            # Workers are spawned as jobs are submitted, so the variable stays set until the pool closes; a
            # value the user set wins. This process's polars read it long ago and is unaffected.
            self._saved_threads = os.environ.get(THREADS_VARIABLE)
            if self._saved_threads is None:
                os.environ[THREADS_VARIABLE] = str(max(1, core_count() // self.count))
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"))
            for _ in range(self.count):
                self._pool.submit(warm_up)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
            if self._saved_threads is None:
                os.environ.pop(THREADS_VARIABLE, None)


def warm_up() -> None:
    """A first job for a fresh worker: importing the ops is most of its start-up."""
    import llmrecipe.data.ops  # noqa: F401
