"""Concurrent runs on one workdir: a second run of a recipe refuses (naming the holder) or waits, a killed holder's
lock is free at once, and two recipes sharing a store compute a step they both need once."""

from __future__ import annotations

import json
import os
import signal

import pytest

from tests.conftest import write_tiny_recipe
from tests.fake_steps import Run

pytestmark = pytest.mark.e2e  # subprocesses in process groups

SLOW_DATA = {"FAKE_DATA_SECONDS": "2"}


def test_a_second_run_of_the_recipe_refuses_naming_the_holder_or_waits_with_wait(tmp_path):
    recipe = write_tiny_recipe(tmp_path, steps=20)
    first = Run(recipe, env=SLOW_DATA)
    first.wait_for("[corpus] reading")
    refused = Run(recipe)
    assert refused.finish() == 1
    assert (f"error: {tmp_path / 'work'} is in use by another run of recipe 'tiny': pid {first.process.pid} on "
            in refused.output())
    assert ", started 20" in refused.output() and "wait for it with --wait" in refused.output()
    waiting = Run(recipe, "--wait")
    waiting.wait_for(f"waiting for the run of this recipe by pid {first.process.pid}")
    assert first.finish() == 0
    assert waiting.finish() == 0, waiting.output()
    assert "finished: 0 steps ran, 4 cached" in waiting.output()


def test_the_lock_of_a_killed_run_is_recovered_at_once(tmp_path):
    recipe = write_tiny_recipe(tmp_path, steps=20)
    killed = Run(recipe, env={"FAKE_DATA_SECONDS": "30"})
    killed.wait_for("[corpus] reading")
    os.killpg(killed.process.pid, signal.SIGKILL)
    killed.finish()
    stale = list((tmp_path / "work" / "locks").glob("run-tiny-*.lock"))
    assert len(stale) == 1 and json.loads(stale[0].read_text())["pid"] == killed.process.pid  # left by the dead run
    again = Run(recipe)
    assert again.finish() == 0, again.output()
    assert not list((tmp_path / "work" / "locks").iterdir())  # a run removes its locks when it ends


def test_two_recipes_sharing_a_store_run_at_once_and_compute_a_shared_step_once(tmp_path):
    first = write_tiny_recipe(tmp_path / "one", steps=20)
    second = write_tiny_recipe(tmp_path / "two", steps=30, edits=(('name = "tiny"', 'name = "other"'),))
    workdir = tmp_path / "shared"
    calls = tmp_path / "calls.txt"
    env = {**SLOW_DATA, "FAKE_CALLS": str(calls)}
    a = Run(first, "--workdir", str(workdir), env=env)
    a.wait_for("[corpus] reading")
    b = Run(second, "--workdir", str(workdir), env=env)
    b.wait_for(f"[corpus] waiting for pid {a.process.pid}")
    assert a.finish() == 0, a.output()
    assert b.finish() == 0, b.output()
    assert "[corpus] data: cached, skipping" in b.output()
    computed = calls.read_text().split()
    assert sorted(computed) == ["base", "base", "corpus", "corpus@tok", "tok"]  # the two base steps differ
    stores = sorted(p.name for p in (workdir / "store").iterdir())
    assert len(stores) == 5
