"""Shared fixtures: tiny recipes and corpora written into tmp folders, nothing from the network."""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path

import pytest

# Training runs record the matmul peak they measure for later plans; tests keep theirs away from the user's cache.
os.environ.setdefault("LLMRECIPE_CACHE_DIR", tempfile.mkdtemp(prefix="llmrecipe-test-cache-"))

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"

SUBJECTS = "the king|the queen|a soldier|the old fool|my lord|the players|a messenger|the ghost".split("|")
VERBS = "speaks of|walks toward|dreams of|weeps for|laughs at|fights for|waits by|sings to".split("|")
OBJECTS = "the castle|the sea|a crown|the garden|his sword|the storm|her letter|the night".split("|")


def make_corpus(folder: Path, documents: int = 60, sentences: int = 20, seed: int = 0) -> Path:
    """Plain-text documents, one file each, of sentences from a tiny grammar: deterministic for a seed.

    The grammar gives the text structure beyond word frequencies, so a model that learns anything beats
    the unigram baseline clearly.
    """
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(documents):
        lines = [
            f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."
            for _ in range(sentences)
        ]
        (folder / f"doc{i:03d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


TINY_RECIPE = """
[run]
name = "tiny"
seed = 7
workdir = "work"

[steps.corpus]
kind = "data"
sources = [{{ path = "corpus" }}]
ops = [{{ op = "normalize" }}, {{ op = "dedup_exact" }}]
split = {{ val = 0.2, test = 0.1 }}

[steps.tok]
kind = "tokenizer"
data = "corpus"
type = "bpe"
vocab_size = 300

[steps.base]
kind = "pretrain"
data = "corpus"
tokenizer = "tok"
model = {{ n_layer = 2, n_head = 2, d_model = 32, seq_len = 32 }}
optim = {{ lr = 1e-2, warmup = 5 }}
batch_size = 4
budget = {{ steps = {steps} }}
eval_every = 20
eval_batches = 2
checkpoint_every = {checkpoint_every}
log_every = 5
{extra}
"""


def write_tiny_recipe(
    folder: Path, steps: int = 40, checkpoint_every: int = 10, extra: str = "", edits: tuple[tuple[str, str], ...] = ()
) -> Path:
    """A complete small recipe (data -> tokenizer -> pretrain) over a generated corpus in `folder`.

    `edits` are (old, new) text replacements applied to the recipe, each of which must match.
    """
    make_corpus(folder / "corpus")
    text = textwrap.dedent(TINY_RECIPE.format(steps=steps, checkpoint_every=checkpoint_every, extra=extra))
    for old, new in edits:
        assert old in text, f"edit does not match the recipe: {old!r}"
        text = text.replace(old, new)
    path = folder / "recipe.toml"
    path.write_text(text)
    return path


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    return write_tiny_recipe(tmp_path)


def pytest_collection_modifyitems(config, items):
    """`cuda` tests exist everywhere and run only where torch sees a GPU (benchmarks/gpu_check.py runs them there)."""
    if not any("cuda" in item.keywords for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def full_run(tmp_path_factory) -> Path:
    """The recipe of tests/full_recipe.py (every step kind) after one uninterrupted `llmrecipe run`, shared by the
    tests that compare with it or read its store. Tests copy what they change."""
    from tests.full_recipe import run_cli, write_full_recipe

    recipe = write_full_recipe(tmp_path_factory.mktemp("full-reference"))
    done = run_cli(recipe)
    assert done.returncode == 0, done.stderr
    return recipe
