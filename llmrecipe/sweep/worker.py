"""One trial, in a process of its own: `python -m llmrecipe.sweep.worker JOB.json`.

It runs the trial's recipe through the ordinary run (so cached steps are skipped and an interrupted training step
resumes from its checkpoint), then writes the trial's result file, atomically. A trial whose step fails still gets
a result, with the error; an interrupted one gets none, so the next `llmrecipe sweep` runs it again (resuming).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

INTERRUPTED = 75
"""Exit code of a trial stopped before it ended (a signal): it has no result and resumes in the next sweep."""


def run_job(job: dict[str, Any]) -> dict[str, Any] | None:
    """Run the trial a job describes; its result (also written to job["result"]), or None when interrupted."""
    from llmrecipe import api, preemption
    from llmrecipe.errors import RecipeError, StepFailed, StorageError, WorkdirBusy
    from llmrecipe.run.reporter import LineReporter

    started = time.time()
    clock = time.perf_counter()
    state, error, metrics, run_id = "done", None, {}, None
    with open(job["log"], "a", encoding="utf-8") as log:
        try:
            loaded = api.load(job["recipe"], job["overrides"])
            report = api.run(loaded, workdir=job["workdir"], reporter=LineReporter(log), wait=True)
            run_id = report.run_id
            metrics = {f"steps.{o.name}.{k}": v for o in report.outcomes for k, v in o.metrics.items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
        except (preemption.Interrupted, KeyboardInterrupt):
            log.write("trial interrupted: it resumes in the next `llmrecipe sweep`\n")
            return None
        except (StepFailed, RecipeError, WorkdirBusy, StorageError) as failure:
            state, error = "failed", str(failure)
        except Exception as failure:  # a bug: the trial is recorded as failed with it, and the sweep goes on
            state, error = "failed", f"unexpected {type(failure).__name__}: {failure}"
            log.write(traceback.format_exc())
    result = {"trial": job["trial"], "state": state, "error": error, "run_id": run_id, "metrics": metrics,
              "started": started, "seconds": round(time.perf_counter() - clock, 3),
              "fingerprints": job["fingerprints"]}
    write_atomically(Path(job["result"]), json.dumps(result, indent=2))
    return result


def write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    return 0 if run_job(job) is not None else INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
