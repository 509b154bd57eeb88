"""Where trials run: `local` processes on this machine, or `ray` tasks on a Ray cluster. Either way a trial is the
same worker process (llmrecipe/sweep/worker.py) with the same job, so the results are the same."""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from llmrecipe.host import core_count, gpu_count
from llmrecipe.sweep.worker import INTERRUPTED, write_atomically

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0
"""How often a watched trial's validation losses are read."""

Watch = Callable[[dict[str, Any]], "str | None"]
"""job -> a reason to stop the trial now (early stopping), or None."""


def _die_with_parent() -> None:
    """In the trial process before it starts: the kernel kills it when the thread that started it goes, so a sweep
    killed with SIGKILL leaves no orphan trial training on (its checkpoint stays; the next sweep resumes it)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: an orphan finishes its trial, and the next sweep waits for it
        pass


def run_trial_process(job: dict[str, Any], watch: Watch | None = None) -> dict[str, Any] | None:
    """Run one trial's worker process and wait for it: its result, None when it was interrupted (no result; it
    resumes next time), or a failed result when the process died without writing one (killed, out of memory).
    `watch(job)`, asked every second, may give a reason to stop the trial: it is sent SIGTERM (it saves a checkpoint
    and ends) and recorded as pruned, with that reason."""
    job_file = Path(job["result"]).with_suffix(".job.json")
    job_file.write_text(json.dumps(job, indent=2), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "PYTHONUNBUFFERED": "1"}
    if job.get("visible_gpus") is not None:
        env["CUDA_VISIBLE_DEVICES"] = job["visible_gpus"]
    clock = time.perf_counter()
    with open(job["log"], "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "llmrecipe.sweep.worker", str(job_file)], env=env,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                   preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        pruned = _wait(process, job, watch)
    code = process.returncode
    result = Path(job["result"])
    if code == 0 and result.is_file():
        return json.loads(result.read_text(encoding="utf-8"))
    if pruned is not None:
        record = {"trial": job["trial"], "state": "pruned", "error": pruned, "run_id": None, "metrics": {},
                  "started": None, "seconds": round(time.perf_counter() - clock, 3), "fingerprints": job["fingerprints"]}
        write_atomically(result, json.dumps(record, indent=2))  # a pruned trial is finished: a resumed sweep skips it
        return record
    if code in (INTERRUPTED, -signal.SIGINT, -signal.SIGTERM, 130, 143):
        return None
    ended = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
    return {"trial": job["trial"], "state": "failed", "error": f"the trial's process {ended} without a result "
            f"(see {job['log']})", "run_id": None, "metrics": {}, "started": None, "seconds": None}


def _wait(process: subprocess.Popen, job: dict[str, Any], watch: Watch | None) -> str | None:
    """Wait for the trial's process; the reason it was stopped early, if `watch` gave one."""
    while True:
        try:
            process.wait(timeout=WATCH_SECONDS)
            return None
        except subprocess.TimeoutExpired:
            pass
        if watch is not None and (reason := watch(job)) is not None:
            process.send_signal(signal.SIGTERM)
            process.wait()
            return reason


class LocalEngine:
    """Up to `parallel` trial processes at once on this machine, each given its share of the cores and, when its
    plan trains on CUDA, GPUs of its own (CUDA_VISIBLE_DEVICES): a trial waits for free GPUs, so trials never
    share one."""

    def __init__(self, parallel: int, gpus: int | None = None):
        self.parallel = parallel
        self.threads = max(1, core_count() // parallel)
        self.free_gpus: queue.Queue[int] = queue.Queue()
        for gpu in range(gpu_count() if gpus is None else gpus):
            self.free_gpus.put(gpu)
        self.gpus = self.free_gpus.qsize()
        self._taking = threading.Lock()

    def run(self, jobs: list[dict[str, Any]],
            watch: Watch | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        with concurrent.futures.ThreadPoolExecutor(self.parallel) as pool:
            futures = {pool.submit(self._run_one, {**job, "threads": self.threads}, watch): job for job in jobs}
            for done in concurrent.futures.as_completed(futures):
                yield futures[done], done.result()

    def _run_one(self, job: dict[str, Any], watch: Watch | None) -> dict[str, Any] | None:
        wanted = min(job["gpus"], self.gpus)
        with self._taking:  # one trial takes its GPUs at a time, so two never hold part of what each needs
            taken = [self.free_gpus.get() for _ in range(wanted)]
        try:
            visible = ",".join(map(str, sorted(taken))) if taken else None
            return run_trial_process({**job, "visible_gpus": visible}, watch)
        finally:
            for gpu in taken:
                self.free_gpus.put(gpu)

    def close(self) -> None:
        pass


class RayEngine:
    """Trials as Ray tasks, `parallel` at a time, each asking for the CPUs and GPUs its plan needs. The workdir must
    be on a file system every node sees: the tasks read and write the store and the sweep's folder there."""

    def __init__(self, parallel: int, address: str | None):
        import ray

        self.ray = ray
        self.parallel = parallel
        self.started = not ray.is_initialized()
        if self.started:
            ray.init(address=address or os.environ.get("RAY_ADDRESS"), log_to_driver=False)
        self.task = ray.remote(max_retries=0)(run_trial_process)

    def run(self, jobs: list[dict[str, Any]],
            watch: Watch | None = None) -> Iterator[tuple[dict[str, Any], dict[str, Any] | None]]:
        """`watch` is not used: the recipe refuses early_stop with this engine (a task's files are on its node)."""
        waiting, running = list(jobs), {}
        while waiting or running:
            while waiting and len(running) < self.parallel:
                job = waiting.pop(0)
                task = self.task.options(num_cpus=job["cpus"], num_gpus=job["gpus"])
                running[task.remote({**job, "threads": max(1, job["cpus"])})] = job
            (done,), _ = self.ray.wait(list(running), num_returns=1)
            yield running.pop(done), self.ray.get(done)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def engine_for(kind: str, parallel: int, address: str | None):
    return RayEngine(parallel, address) if kind == "ray" else LocalEngine(parallel)
