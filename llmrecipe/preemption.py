"""Stop requests (SIGTERM, SIGINT, a `max_time` deadline) turned into stops at safe points.

Batch schedulers (Slurm, Kubernetes, Docker) end a job with SIGTERM and, a grace period later, SIGKILL. Work that
can save its state first does so at a *safe point*: code that runs long marks its unsafe stretch with `deferred()`
and asks `pending()` at its safe points; everywhere else a stop request interrupts at once, as Ctrl-C always did.

    with preemption.deferred():            # a signal now only records the request
        while step < total_steps:
            train_one_step()
            if (request := preemption.pending()) is not None:
                save_checkpoint()
                raise preemption.Interrupted(request, saved=f"checkpoint at step {step}")

`Interrupted` derives from BaseException, like KeyboardInterrupt, so `except Exception` in a library does not
swallow it. A second signal while one is pending stops at once: the escape hatch when a safe point never comes
(a SIGTERM within `TERM_ECHO_SECONDS` of the first is the same one, delivered twice).

Exit codes (`Request.exit_code`): 130 for SIGINT and 143 for SIGTERM (128 + the signal number, what a shell
reports for a process those signals killed, so wrappers that already test for them keep working), and 75 for the
deadline (EX_TEMPFAIL: "try again", the cue for a requeue script to run the same command again).

Only the main thread of the main interpreter can install handlers; elsewhere `handling()` only keeps the deadline,
which `pending()` still sees. Nothing here imports torch: every layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Iterator

SIGNALS = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "max_time": 75}

FORWARD_SIGNAL = signal.SIGUSR1
"""How a process passes its stop request on to processes it started: a stop at their next safe point, like SIGTERM,
but never the second request that stops at once."""

DEADLINE_ENV = "LLMRECIPE_DEADLINE"
"""The deadline as Unix time, handed to processes this one starts (training processes of `run.nproc`), whose
`handling()` takes it up so that they stop at the same deadline."""


@dataclass(frozen=True)
class Request:
    """Why the run should stop: a signal's name, or `max_time`."""

    reason: str

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.reason]

    def describe(self) -> str:
        return "the max_time deadline was reached" if self.reason == "max_time" else f"{self.reason} received"


class Interrupted(BaseException):
    """The run stops because of `request`; `saved` says what the stopping code saved first (None: nothing)."""

    def __init__(self, request: Request, saved: str | None = None):
        self.request = request
        self.saved = saved
        self.step: str | None = None
        """The recipe step that was running, filled in by the scheduler."""
        super().__init__(request.describe() + (f" ({saved})" if saved else ""))

    @property
    def exit_code(self) -> int:
        return self.request.exit_code


class _State:
    def __init__(self) -> None:
        self.depth = 0
        """How many `deferred()` sections the main thread is inside."""
        self.request: Request | None = None
        self.requested_at = 0.0
        """When the pending request arrived (monotonic seconds)."""
        self.deadline: float | None = None
        """Unix time at which `max_time` asks the run to stop; None without a deadline."""


_state = _State()


def pending() -> Request | None:
    """The stop request that arrived and was deferred, or the deadline once it has passed; None to go on."""
    if _state.request is None and _state.deadline is not None and time.time() >= _state.deadline:
        _state.request = Request("max_time")
    return _state.request


def check() -> None:
    """A safe point for code that has nothing to save: stop here if a stop was requested."""
    if (request := pending()) is not None:
        raise Interrupted(request)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Inside, a stop request is recorded for `pending()` instead of interrupting; sections nest."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1


@contextlib.contextmanager
def handling(max_seconds: float | None = None) -> Iterator[None]:
    """Turn SIGTERM, SIGINT and the deadline `max_seconds` from now into stop requests while inside.

    Without `max_seconds`, a deadline this process inherited (DEADLINE_ENV) still applies. Restores the previous
    handlers, deadline and pending request when it exits, so it nests and leaves callers of the API as it found them.
    """
    inherited = os.environ.get(DEADLINE_ENV)
    deadline = time.time() + max_seconds if max_seconds is not None else float(inherited) if inherited else None
    saved = (_state.request, _state.deadline, inherited)
    _state.request, _state.deadline = None, deadline
    if deadline is not None:
        os.environ[DEADLINE_ENV] = repr(deadline)
    previous = _install(deadline)
    try:
        yield
    finally:
        _uninstall(previous)
        _state.request, _state.deadline = saved[0], saved[1]
        if saved[2] is None:
            os.environ.pop(DEADLINE_ENV, None)
        else:
            os.environ[DEADLINE_ENV] = saved[2]


def _install(deadline: float | None) -> dict[int, object] | None:
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = {number: signal.signal(number, _on_signal) for number in SIGNALS}
    previous[FORWARD_SIGNAL] = signal.signal(FORWARD_SIGNAL, _on_forwarded)
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _on_deadline)
    if deadline is not None:  # the alarm interrupts work outside deferred sections, which never asks pending()
        signal.setitimer(signal.ITIMER_REAL, max(deadline - time.time(), 0.001))
    return previous


def _uninstall(previous: dict[int, object] | None) -> None:
    if previous is None:
        return
    signal.setitimer(signal.ITIMER_REAL, 0)
    for number, handler in previous.items():
        signal.signal(number, handler)


def _on_signal(number: int, frame: object) -> None:
    _request(Request(SIGNALS[number]))


def _on_deadline(number: int, frame: object) -> None:
    if _state.depth > 0 and _state.request is not None:
        return  # a signal is already pending; the deadline adds nothing and must not force a stop
    _request(Request("max_time"))


def _on_forwarded(number: int, frame: object) -> None:
    # A scheduler's SIGTERM often reaches the whole process group, so a child may hold the same request already:
    # the parent's copy is never a second request.
    if _state.depth > 0 and _state.request is not None:
        return
    _request(Request("SIGTERM"))


TERM_ECHO_SECONDS = 1.0
"""A SIGTERM this soon after a pending one is the same request arriving twice, not a second request: schedulers
signal every process of a job, and launchers (torchrun's agent) pass the signal on to their workers as well. A
person who wants to stop at once sends SIGINT (Ctrl-C) again, or SIGKILL."""


def _request(request: Request) -> None:
    if _state.depth > 0 and _state.request is None:
        _state.request = request  # the code inside the deferred section stops at its next safe point
        _state.requested_at = time.monotonic()
        return
    if (_state.depth > 0 and request.reason == "SIGTERM" and _state.request == request
            and time.monotonic() - _state.requested_at < TERM_ECHO_SECONDS):
        return
    # Outside a deferred section nothing will ask pending(): stop now. Inside one with a request already pending,
    # a second request means the safe point did not come soon enough for whoever is asking.
    _state.request = _state.request or request
    raise Interrupted(request)
