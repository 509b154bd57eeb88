"""The compiler: derived values, implicit steps, and fingerprints that change exactly when results can."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrecipe import api
from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import Plan
from tests.conftest import write_tiny_recipe


def compile_tiny(folder: Path, overrides=(), **kwargs) -> Plan:
    path = folder / "recipe.toml"
    if not path.exists():
        write_tiny_recipe(folder, **kwargs)
    return api.compile(api.load(path, overrides))


def fingerprints(plan: Plan) -> dict[str, str]:
    return {step.name: step.fingerprint for step in plan.steps}


def test_implicit_tokenize_step_sits_between_data_tokenizer_and_pretrain(tmp_path):
    plan = compile_tiny(tmp_path)
    names = [s.name for s in plan.steps]
    assert names == ["corpus", "tok", "corpus@tok", "base"]
    tokenize = plan.step("corpus@tok")
    assert tokenize.implicit and tokenize.kind == "tokenize"
    assert tokenize.inputs == {"data": "corpus", "tokenizer": "tok"}
    assert plan.step("base").inputs == {"tokens": "corpus@tok", "tokenizer": "tok"}


def test_derived_values_match_the_built_model(tmp_path):
    import torch

    from llmrecipe.models.build import build_model
    from llmrecipe.plan.specs import PretrainSpec

    plan = compile_tiny(tmp_path)
    base = plan.step("base")
    spec = PretrainSpec.model_validate(base.spec)
    assert spec.model.head_dim == 16
    assert spec.model.vocab_size == 320  # 300 rounded up to a multiple of 64
    assert spec.total_steps == 40 and spec.tokens_per_step == 4 * 32
    model = build_model(spec.model)
    assert base.derived["n_params"] == sum(p.numel() for p in model.parameters())
    assert isinstance(model(torch.zeros(1, 4, dtype=torch.long)), torch.Tensor)


def test_token_budget_gives_total_steps(tmp_path):
    plan = compile_tiny(tmp_path, edits=(("budget = { steps = 40 }", "budget = { tokens = 1000 }"),))
    assert plan.step("base").derived["total_steps"] == 8  # ceil(1000 / (4 * 32))


def test_changing_a_pretrain_hyperparameter_leaves_data_and_tokenizer_alone(tmp_path):
    before = fingerprints(compile_tiny(tmp_path))
    after = fingerprints(compile_tiny(tmp_path, ["steps.base.optim.lr=1e-3"]))
    assert before["corpus"] == after["corpus"]
    assert before["tok"] == after["tok"]
    assert before["corpus@tok"] == after["corpus@tok"]
    assert before["base"] != after["base"]


def test_changing_the_tokenizer_changes_everything_downstream_of_it(tmp_path):
    before = fingerprints(compile_tiny(tmp_path))
    after = fingerprints(compile_tiny(tmp_path, ["steps.tok.vocab_size=400"]))
    assert before["corpus"] == after["corpus"]
    assert {name for name in before if before[name] != after[name]} == {"tok", "corpus@tok", "base"}


def test_fields_that_cannot_change_results_do_not_change_the_fingerprint(tmp_path):
    before = fingerprints(compile_tiny(tmp_path))
    after = fingerprints(compile_tiny(tmp_path, ["steps.base.log_every=1", "steps.base.checkpoint_every=3"]))
    assert before == after


def test_editing_an_input_file_changes_the_data_fingerprint(tmp_path):
    before = fingerprints(compile_tiny(tmp_path))
    (tmp_path / "corpus" / "doc000.txt").write_text("something else entirely\n")
    after = fingerprints(compile_tiny(tmp_path))
    assert before["corpus"] != after["corpus"]


def test_fingerprints_do_not_depend_on_where_the_project_lives(tmp_path):
    first = fingerprints(compile_tiny(tmp_path / "a"))
    second = fingerprints(compile_tiny(tmp_path / "b"))
    assert first == second


def test_plan_round_trips_through_json(tmp_path):
    plan = compile_tiny(tmp_path)
    again = Plan.model_validate(json.loads(json.dumps(plan.model_dump(mode="json"))))
    assert again == plan


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps.base.model.d_model=33", "d_model = 33 is not a multiple of model.n_head = 2"),
        ("steps.base.model.d_model=30", "head size d_model / n_head = 15 is odd"),
        ("steps.base.model.n_kv_head=3", "n_head = 2 is not a multiple of model.n_kv_head = 3"),
        ("steps.base.micro_batch_size=3", "batch_size = 4 is not a multiple of micro_batch_size = 3"),
        ("steps.base.optim.warmup=40", "warmup = 40 steps is not shorter than the whole run"),
    ],
)
def test_impossible_combinations_are_recipe_errors(tmp_path, override, message):
    with pytest.raises(RecipeError) as error:
        compile_tiny(tmp_path, [override])
    assert message in str(error.value)
    assert str(error.value).startswith("steps.base:")


def test_missing_source_files_are_recipe_errors(tmp_path):
    write_tiny_recipe(tmp_path, edits=(('path = "corpus"', 'path = "corpus/*.md"'),))
    with pytest.raises(RecipeError, match=r"no files match '\*\.md'"):
        compile_tiny(tmp_path)


def test_uninstalled_package_source_is_a_recipe_error(tmp_path):
    write_tiny_recipe(tmp_path, edits=(('{ path = "corpus" }', '{ package = "no_such_pkg_xyz", glob = "*.txt" }'),))
    with pytest.raises(RecipeError, match="no installed package of that name"):
        compile_tiny(tmp_path)


def test_engine_is_not_fingerprinted_and_ray_missing_is_a_recipe_error(tmp_path, monkeypatch):
    import importlib.util

    from llmrecipe import api
    from llmrecipe.errors import RecipeError
    from tests.conftest import write_tiny_recipe

    path = write_tiny_recipe(tmp_path)
    local = api.compile(api.load(path, ()))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: real_find_spec(name, *a) if name != "ray" else object())
    ray = api.compile(api.load(path, ["run.engine=ray", "run.ray_address=auto"]))
    corpus = [next(s for s in plan.steps if s.name == "corpus") for plan in (local, ray)]
    assert corpus[1].spec["engine"] == "ray" and corpus[1].spec["ray_address"] == "auto"
    assert corpus[0].fingerprint == corpus[1].fingerprint
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    with pytest.raises(RecipeError, match=r"run.engine = 'ray': Ray is not installed; install it with pip install 'llmrecipe\[ray\]'"):
        api.compile(api.load(path, ["run.engine=ray"]))


def test_a_run_record_summarises_a_step_reading_many_files(tmp_path):
    """100k small files would put a line per file into every run record's plan.json (24 MB); a summary per source
    keeps it small and still tells two different inputs apart."""
    from llmrecipe.plan.plan import LISTED_FILES, ExternalFile

    plan = compile_tiny(tmp_path)
    data = plan.step("corpus")
    many = [ExternalFile(source=0, name=f"docs/{i:06d}.txt", sha256=f"{i:064x}", size=100, path=f"/data/docs/{i:06d}.txt")
            for i in range(100_000)]
    big = plan.model_copy(update={"steps": [s.model_copy(update={"external": many}) if s is data else s for s in plan.steps]})
    record = big.record()
    summary = next(s for s in record["steps"] if s["name"] == "corpus")["external"]
    assert summary == [{"source": 0, "files": 100_000, "bytes": 10_000_000, "listing_sha256": summary[0]["listing_sha256"],
                        "first": ["docs/000000.txt", "docs/000001.txt", "docs/000002.txt"]}]
    assert len(json.dumps(record)) < 20_000 < len(json.dumps(big.model_dump(mode="json")))
    changed = many[:-1] + [many[-1].model_copy(update={"sha256": "f" * 64})]
    other = big.model_copy(update={"steps": [s.model_copy(update={"external": changed}) if s.name == "corpus" else s
                                             for s in big.steps]})
    assert next(s for s in other.record()["steps"] if s["name"] == "corpus")["external"] != summary
    assert plan.record() == plan.model_dump(mode="json") and len(data.external) <= LISTED_FILES  # small: whole


# --- training memory against the device ------------------------------------------------------------------------


def plan_on(monkeypatch, folder: Path, memory: int | None, overrides=()) -> Plan:
    from llmrecipe.plan.plan import Host

    monkeypatch.setattr(api, "probe_host", lambda: Host(cpu_cores=2, memory_bytes=memory))
    return api.compile(api.load(write_tiny_recipe(folder), overrides))


def estimate(plan: Plan, step: str = "base") -> int:
    from llmrecipe.plan.limits import training_memory

    found = plan.step(step)
    return sum(training_memory(found.spec, found.derived["n_params"], found.kind).values())


BIG = ["steps.base.model.d_model=512", "steps.base.model.n_layer=8", "steps.base.model.seq_len=256"]


def test_a_model_that_cannot_fit_the_machine_is_refused_with_the_numbers_and_the_fixes(tmp_path, monkeypatch):
    need = estimate(plan_on(monkeypatch, tmp_path, None, BIG))
    with pytest.raises(RecipeError) as error:
        plan_on(monkeypatch, tmp_path, need // 2, BIG)
    message = str(error.value)
    assert message.startswith("steps.base: training needs at least") and "weights, gradients and optimizer" in message
    assert "activations" in message and "this machine's RAM has" in message
    assert "micro_batch_size (now 4)" in message and "activation_checkpointing = true" in message


def test_a_model_close_to_the_machine_memory_is_a_warning_that_validate_prints(tmp_path, monkeypatch, capsys):
    from llmrecipe.cli import main

    need = estimate(plan_on(monkeypatch, tmp_path, None, BIG))
    plan = plan_on(monkeypatch, tmp_path, int(need / 0.9), BIG)
    assert len(plan.warnings) == 1 and "90% of the" in plan.warnings[0] and "may run out of memory" in plan.warnings[0]
    assert not plan_on(monkeypatch, tmp_path, need * 2, BIG).warnings
    plan_on(monkeypatch, tmp_path, int(need / 0.9), BIG)
    assert main(["validate", str(tmp_path / "recipe.toml"), *sum((["--set", o] for o in BIG), [])]) == 0
    assert "warning: steps.base: training needs at least" in capsys.readouterr().err


def test_activation_checkpointing_and_a_smaller_micro_batch_lower_the_estimate(tmp_path, monkeypatch):
    base = estimate(plan_on(monkeypatch, tmp_path, None, BIG))
    checkpointed = estimate(plan_on(monkeypatch, tmp_path, None, [*BIG, "steps.base.activation_checkpointing=true"]))
    smaller = estimate(plan_on(monkeypatch, tmp_path, None, [*BIG, "steps.base.micro_batch_size=1"]))
    assert checkpointed < base and smaller < base


def test_gpu_memory_is_the_smallest_visible_gpu_as_nvidia_smi_reports_it(monkeypatch):
    import subprocess

    from llmrecipe import host

    answer = subprocess.CompletedProcess([], 0, stdout="143771\n81559\n143771\n", stderr="")
    monkeypatch.setattr(host.subprocess, "run", lambda *args, **kwargs: answer)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert host.gpu_memory_bytes() == 81559 * 2**20
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert host.gpu_memory_bytes() == 143771 * 2**20

    def missing(*args, **kwargs):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(host.subprocess, "run", missing)
    assert host.gpu_memory_bytes() is None
    assert host.memory_bytes() is None or host.memory_bytes() > 2**28
