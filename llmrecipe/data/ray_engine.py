"""The data step's jobs as Ray tasks: its work on a Ray cluster (`[run] engine = "ray"`).

The tasks are the local engine's jobs (shard jobs and dedup stage jobs: llmrecipe.data.shardwork, corpusjobs),
handed the same job objects and answered in the same order, so the outputs are the local engine's bytes. A job reads and writes files in the
step's work folder, which every node must see at the same path (a shared filesystem such as NFS); results come
back through Ray's object store. Ray retries a task whose worker died (a job run twice writes the same files).

Each task asks for one CPU and the memory of a batch at its peak (about 20 times `batch_mb`), and runs polars on
one thread, with the local workers' allocator settings. Tasks are spread over the nodes, and about two per CPU of the cluster are in flight at once.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Iterable, Iterator

from llmrecipe.data.workers import Job, worker_environment
from llmrecipe.errors import StepError

AHEAD = 2
"""Tasks in flight per CPU of the cluster."""
PEAK_PER_BATCH = 20
"""A job's peak memory in multiples of its batch's text (the recipe's `batch_mb` documents this figure)."""
RETRIES = 3
"""Times Ray re-runs a task whose worker or node died."""


def run_on_node(job: Job) -> tuple[str, Any]:
    """The job's result, and the Ray node that ran it (for the log)."""
    import ray

    return ray.get_runtime_context().get_node_id(), job.run()


class RayWorkers:
    def __init__(self, address: str | None, batch_mb: int):
        self.address = address
        self.memory = PEAK_PER_BATCH * batch_mb << 20
        self.nodes: Counter = Counter()
        """Jobs run per Ray node id."""
        self._task = None
        self._started_ray = False

    def start(self) -> None:
        self._connect()

    def _connect(self):
        if self._task is None:
            import ray

            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
                except ConnectionError as error:
                    raise StepError(f"cannot reach the Ray cluster at run.ray_address = '{self.address}': {error}; "
                                    "start it (ray start --head) or fix the address") from None
                self._started_ray = True
            self._task = ray.remote(run_on_node).options(
                num_cpus=1, memory=self.memory, max_retries=RETRIES, scheduling_strategy="SPREAD",
                runtime_env={"env_vars": worker_environment(threads=1)})
        return self._task

    def run(self, jobs: Iterable[Job]) -> Iterator[tuple[Job, Any]]:
        """Each job with its result, in job order; jobs are taken from `jobs` as room frees up."""
        import ray

        task = self._connect()
        room = AHEAD * max(1, int(ray.cluster_resources().get("CPU", 1)))
        window: deque = deque()
        for job in jobs:
            window.append((job, task.remote(job)))
            if len(window) >= room:
                yield self._result(*window.popleft())
        while window:
            yield self._result(*window.popleft())

    def _result(self, job: Job, reference) -> tuple[Job, Any]:
        import ray

        node, result = ray.get(reference)
        self.nodes[node] += 1
        return job, result

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
        self._task = None
