"""Verifiable, reproducible runs: the same recipe twice gives the same bytes, `llmrecipe verify` finds one flipped
byte in any kind of artifact, and each run record's manifest says what produced what."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.run.provenance import git_state
from tests.full_recipe import compare_stores, run_cli, write_full_recipe
from tests.test_store_integrity import flip_byte

ARTIFACTS = {  # kind -> (step, file in its store entry)
    "weights": ("base", "model.safetensors"),
    "tokenizer": ("tok", "tokenizer.json"),
    "parquet": ("corpus", "train.parquet"),
    "onnx": ("onnx", "model.onnx"),
    "json": ("eval", "results.json"),
}


@pytest.mark.e2e
@pytest.mark.slow  # the default suite's chaos test compares a killed and resumed run with an uninterrupted one
def test_the_same_recipe_twice_gives_byte_identical_artifacts(full_run, tmp_path):
    again = write_full_recipe(tmp_path)
    done = run_cli(again)
    assert done.returncode == 0, done.stderr
    kinds = {step.kind for step in api.compile(api.load(again)).steps}
    assert kinds == {"data", "tokenizer", "tokenize", "pretrain", "finetune", "evaluate", "export"}
    result = compare_stores(full_run.parent / "work", tmp_path / "work")
    print(f"compared {result.entries} entries, {result.files} files, {result.bytes:,} bytes; "
          f"wall-clock-only: {result.wall_clock_only}; differences: {result.differences}")
    assert result.entries == 7 and result.files > 30
    assert result.differences == []


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ARTIFACTS)
def test_verify_names_a_single_flipped_byte_in_each_kind_of_artifact(full_run, tmp_path, kind, capsys):
    workdir = tmp_path / "work"
    shutil.copytree(full_run.parent / "work" / "store", workdir / "store")
    plan = api.compile(api.load(full_run), workdir=workdir)
    step, name = ARTIFACTS[kind]
    target = workdir / "store" / plan.step(step).fingerprint / name
    assert main(["verify", str(full_run), "--workdir", str(workdir)]) == 0
    capsys.readouterr()
    flip_byte(target, offset=target.stat().st_size // 2, keep_mtime=True)  # size and mtime as they were
    assert main(["verify", str(full_run), "--workdir", str(workdir)]) == 1
    out = capsys.readouterr().out
    assert f"drifted: {target} (step {step}): sha256" in out and "1 drifted" in out
    assert main(["verify", "--workdir", str(workdir)]) == 1  # the whole store, without the recipe
    assert f"drifted: {target} (step {step})" in capsys.readouterr().out


@pytest.mark.e2e
def test_the_run_manifest_names_recipe_fingerprints_digests_versions_and_machine(full_run):
    records = sorted((full_run.parent / "work" / "runs").iterdir())
    manifest = json.loads((records[-1] / "manifest.json").read_text())
    plan = api.compile(api.load(full_run))
    assert manifest["outcome"] == "finished" and manifest["seed"] == 7 and manifest["device"] == "cpu"
    assert manifest["recipe"] == api.load(full_run).recipe.model_dump(mode="json")
    stored = {s["step"]: s for s in manifest["steps"]}
    for step in plan.steps:
        entry = json.loads((full_run.parent / "work" / "store" / step.fingerprint / "manifest.json").read_text())
        assert stored[step.name]["fingerprint"] == step.fingerprint and stored[step.name]["state"] == "done"
        assert stored[step.name]["files"] == entry["files"]
    environment = manifest["environment"]
    assert {"torch", "polars", "tokenizers", "numpy"} <= set(environment["packages"])
    assert {"onnxruntime", "onnxruntime-gpu"} & set(environment["packages"])
    assert environment["python"] and environment["cpu_model"] and environment["gpu_models"] == []
    assert manifest["git"] is None  # the recipe's folder is no repository
    assert manifest["reproducibility"]["same_bytes_on_rerun"] is True
    assert manifest["reproducibility"]["training_processes"] == {"base": 1, "chat": 1}


def test_git_state_names_the_commit_and_whether_the_recipe_changed(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text("[run]\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "recipe.toml"], check=True)
    subprocess.run([*git, "commit", "-qm", "recipe"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert git_state(recipe) == {"commit": head, "repository": str(tmp_path.resolve()), "recipe_changed_since_commit": False}
    recipe.write_text("[run]\nseed = 1\n")
    assert git_state(recipe)["recipe_changed_since_commit"] is True
