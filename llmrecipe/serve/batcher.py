"""A bounded queue of generation jobs and the worker thread that decodes them in batches.

The event loop never decodes: handlers submit a Job and await its deltas, which the worker hands back
with `call_soon_threadsafe`. A job holds one of `capacity` slots from submit until it finishes or its
client goes away (the engine drops a cancelled row at its next step), so a full server answers 429 at
once instead of letting a backlog grow. No lock is ever held across an `await` or a `yield`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from llmrecipe.generate.engine import Delta, Engine
from llmrecipe.generate.sampling import SamplingParams

log = logging.getLogger("llmrecipe.serve")


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class Job:
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    deltas: asyncio.Queue = field(default_factory=asyncio.Queue)
    """Delta objects, then None at the end; an Exception if decoding failed."""
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()

    def send(self, item: Delta | Exception | None) -> None:
        self.loop.call_soon_threadsafe(self.deltas.put_nowait, item)


class Batcher:
    def __init__(self, engine: Engine, capacity: int, max_batch: int, on_tokens: Callable[[int], None] = lambda n: None):
        self.engine, self.capacity, self.max_batch = engine, capacity, max_batch
        self.on_tokens = on_tokens
        self.waiting: queue.Queue[Job | None] = queue.Queue()
        self._held = 0  # slots taken: jobs waiting or decoding
        self._count_lock = threading.Lock()  # guards _held only; never held while decoding or awaiting
        self._worker = threading.Thread(target=self._work, name="llmrecipe-decoder", daemon=True)

    @property
    def busy(self) -> int:
        return self._held

    def start(self) -> None:
        self._worker.start()

    def stop(self) -> None:
        self.waiting.put(None)
        self._worker.join(timeout=30)

    def submit(self, job: Job) -> None:
        with self._count_lock:
            if self._held >= self.capacity:
                raise QueueFull(f"the server is busy ({self.capacity} requests waiting or running); retry shortly")
            self._held += 1
        self.waiting.put(job)

    def _release(self) -> None:
        with self._count_lock:
            self._held -= 1

    def _work(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:  # whatever else is already waiting joins this batch
                try:
                    job = self.waiting.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self.waiting.put(None)
                    break
                batch.append(job)
            self._decode([job for job in batch if not self._dropped(job)])

    def _dropped(self, job: Job) -> bool:
        """A job whose client left before decoding began gives its slot back and is skipped."""
        if job.cancelled.is_set():
            self._release()
            return True
        return False

    def _decode(self, batch: list[Job]) -> None:
        if not batch:
            return
        live = set(range(len(batch)))

        def gone(index: int) -> bool:
            if batch[index].cancelled.is_set():
                live.discard(index)
                self._release()
                return True
            return False

        try:
            for delta in self.engine.stream([j.prompt for j in batch], [j.params for j in batch], cancelled=gone):
                self.on_tokens(1)
                batch[delta.index].send(delta)
                if delta.finish_reason is not None:
                    live.discard(delta.index)
                    self._release()
                    batch[delta.index].send(None)
        except Exception as error:  # a bug or resource failure: every job of the batch learns of it
            log.exception("decoding failed")
            for index in list(live):
                live.discard(index)
                self._release()
                batch[index].send(error)
