"""The next step's batch, built in a background thread while the current step trains.

Batches are pure functions of the step, so building one ahead changes nothing but when the work happens. On a GPU
the tensors are pinned, so their copy to the device does not block the host (`non_blocking=True`).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import torch

from llmrecipe.training.task import Batch, StepBatch, Task


class Prefetcher:
    def __init__(self, task: Task, rows: range, micro_batch_size: int, device: str, total_steps: int):
        self.task, self.rows, self.micro_batch_size = task, rows, micro_batch_size
        self.device, self.total_steps = device, total_steps
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="llmrecipe-batches")
        self._pending: tuple[int, Future] | None = None

    def get(self, step: int) -> StepBatch:
        """Step `step`'s batch on the device; the one after it starts building at once."""
        if self._pending is not None and self._pending[0] == step:
            batch = self._pending[1].result()
        else:  # a jump (a resume, a rollback): whatever was being built is not this step's
            if self._pending is not None:
                self._pending[1].result()  # one builder at a time: tasks keep small caches that are not shared
            batch = self._build(step)
        self._pending = (step + 1, self._pool.submit(self._build, step + 1)) if step + 1 < self.total_steps else None
        return StepBatch([self.on_device(m) for m in batch.micro_batches], batch.normalizer, batch.tokens)

    def on_device(self, batch: Batch) -> Batch:
        return {name: tensor.to(self.device, non_blocking=True) for name, tensor in batch.items()}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _build(self, step: int) -> StepBatch:
        batch = self.task.train_batch(step, self.rows, self.micro_batch_size)
        if self.device == "cuda":
            batch.micro_batches = [{k: v.pin_memory() for k, v in m.items()} for m in batch.micro_batches]
        return batch
