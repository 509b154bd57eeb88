"""Shard jobs run by worker processes, results handed back in job order.

The ops are CPU-bound Python/numpy/polars code that holds one core per batch, so separate processes (not
threads) use the machine. Workers are spawned, not forked: a fork copies polars' thread pool in whatever
state it is and can deadlock. A pass with a single shard, or a step asked for one worker, runs in-process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Iterable, Iterator

from llmrecipe.data.shardwork import ShardJob, ShardResult, run_shard

AHEAD = 2
"""Jobs in flight per worker: enough to keep each busy while the main process merges, few enough that
finished results waiting their turn stay a handful of batches."""


def worker_count(asked: int) -> int:
    """`asked`, or when it is 0 one per CPU core this process may run on."""
    if asked:
        return asked
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Workers:
    def __init__(self, count: int):
        self.count = worker_count(count)
        self._pool: ProcessPoolExecutor | None = None

    def run(self, jobs: Iterable[ShardJob], n_jobs: int) -> Iterator[ShardResult]:
        """The results of `jobs` in job order."""
        if self.count <= 1 or n_jobs <= 1:
            yield from map(run_shard, jobs)
            return
        pool = self._start()
        window: deque[Future] = deque()
        for job in jobs:
            window.append(pool.submit(run_shard, job))
            if len(window) >= AHEAD * self.count:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.count, mp_context=multiprocessing.get_context("spawn"))
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
