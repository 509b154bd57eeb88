"""The two kinds of failure a user sees, each with its own exit code (see DESIGN.md)."""

from __future__ import annotations


class RecipeError(Exception):
    """The recipe is wrong: a user mistake found before any step runs. Exit code 2.

    Each problem is one line that names the TOML path, the bad value and the fix.
    """

    exit_code = 2

    def __init__(self, problems: str | list[str]):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class StepFailed(Exception):
    """A step met a runtime fact it cannot work around (a file vanished, out of memory). Exit code 1."""

    exit_code = 1

    def __init__(self, step: str, message: str, details: str | None = None):
        self.step = step
        self.message = message
        self.details = details
        """Where the full story is (e.g. the run record holding a traceback), if anywhere."""
        super().__init__(f"step '{step}' failed: {message}")


class StepError(Exception):
    """Raised inside an executor for a runtime fact the user can fix; the scheduler wraps it in StepFailed.

    Use it instead of letting a library traceback reach the user: the message says what is wrong and how
    to fix it.
    """


class WorkdirBusy(Exception):
    """Another run holds the workdir's lock. Exit code 1."""

    exit_code = 1


class StorageError(Exception):
    """The workdir cannot be written: the disk is full, or the folder is read-only. Exit code 1.

    The message is one line naming the folder, its free space and what was kept.
    """

    exit_code = 1
