"""Chaos: a tiny full recipe killed with SIGKILL (the whole process group) at random moments of every stage, resumed
each time, ends with the same bytes as an uninterrupted run, no partial store entry, and nothing left in scratch.

The slow test kills at least 20 times: during data processing, tokenizer training, tokenization, training, a
checkpoint write, a store commit, evaluation and export. The quick variant in the default suite kills 4 times.
Each prints its seed (CHAOS_SEED=... repeats a run's choices), the kills per stage, the files compared and the
differences found.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.chaos.harness import Chaos, check_workdir, fresh_step_durations, step_durations
from tests.full_recipe import compare_stores, run_cli, write_full_recipe

FULL_SCHEDULE = (["data"] * 3 + ["commit"] + ["data"] + ["tokenizer"] * 3 + ["commit"] + ["tokenize"] * 3
                 + ["checkpoint"] * 3 + ["training"] * 2 + ["checkpoint"] + ["training"] * 2 + ["commit"]
                 + ["evaluate"] * 3 + ["export"] * 3)
"""27 targets; `commit` kills the next store commit (of corpus, tok and base here)."""
QUICK_SCHEDULE = ["data", "checkpoint", "training", "export"]
TOKENIZATION = ("tokenizer", "tokenize")


def chaos_run(reference: Path, folder: Path, schedule: list[str], fresh: bool) -> tuple[Chaos, str]:
    """`fresh`: draw kill moments inside each step's duration as the first step of a process (measured, about
    20 s more); else inside its duration in the uninterrupted run (shorter where a step imports libraries)."""
    seed = int(os.environ.get("CHAOS_SEED", random.randrange(1 << 30)))
    durations = (fresh_step_durations(reference, reference.parent / "work", folder) if fresh
                 else step_durations(reference.parent / "work"))
    chaos = Chaos(write_full_recipe(folder / "chaos"), durations, random.Random(seed))
    chaos.run(schedule)
    final = run_cli(chaos.recipe)
    assert final.returncode == 0, f"CHAOS_SEED={seed}: the resume after the last kill failed:\n{final.stderr}"
    comparison = compare_stores(reference.parent / "work", chaos.workdir)
    summary = (f"CHAOS_SEED={seed}: {len(chaos.kills)} kills {chaos.per_stage()}; skipped targets {chaos.skipped}; "
               f"compared {comparison.entries} entries, {comparison.files} files, {comparison.bytes:,} bytes; "
               f"{len(comparison.differences)} differences {comparison.differences}; metrics.jsonl equal but for "
               f"wall-clock fields: {comparison.wall_clock_only}; broken invariants: {chaos.problems}")
    print(summary)
    print(f"  kill windows (s): { {step: round(seconds, 2) for step, seconds in durations.items()} }")
    for kill in chaos.kills:
        print(f"  {kill.target:>10} -> {kill.stage:<12} {kill.detail}")
    assert comparison.entries == 7 and comparison.differences == [], summary
    assert chaos.problems == [] and check_workdir(chaos.workdir) == [], summary
    for leftover in ("scratch", "staging", "trash"):  # every step committed: nothing of theirs may stay
        folder = chaos.workdir / leftover
        assert not folder.exists() or not any(folder.iterdir()), f"{leftover}: {list(folder.iterdir())}; {summary}"
    return chaos, summary


@pytest.mark.e2e
@pytest.mark.slow
def test_twenty_kills_over_every_stage_resume_to_the_uninterrupted_bytes(full_run, tmp_path):
    chaos, summary = chaos_run(full_run, tmp_path, FULL_SCHEDULE, fresh=True)
    stages = chaos.per_stage()
    assert len(chaos.kills) >= 20, summary
    for stage in ("data", "training", "checkpoint", "commit", "evaluate", "export"):
        assert stages.get(stage, 0) >= 1, f"no kill landed in {stage}; {summary}"
    assert sum(stages.get(stage, 0) for stage in TOKENIZATION) >= 1, summary


@pytest.mark.e2e
def test_a_few_kills_resume_to_the_uninterrupted_bytes(full_run, tmp_path):
    chaos, summary = chaos_run(full_run, tmp_path, QUICK_SCHEDULE, fresh=False)
    assert len(chaos.kills) >= 3 and chaos.per_stage().get("checkpoint") == 1, summary
