"""Every architecture llmrecipe builds, by its `model.arch` name. Torch-free.

Adding an architecture: its package under models/ (a torch-free `Family` in `__init__.py`, the torch modules in
`model.py`) and one line here. tests/test_project.py keeps the recipe schema's `arch` values equal to these keys.
"""

from __future__ import annotations

from llmrecipe.models import bert, gpt2, llama, lstm, t5
from llmrecipe.models.family import Family

FAMILIES: dict[str, Family] = {
    "llama": llama.FAMILY,
    "gpt2": gpt2.FAMILY,
    "bert": bert.FAMILY,
    "t5": t5.FAMILY,
    "lstm": lstm.FAMILY,
}


def family(arch: str) -> Family:
    return FAMILIES[arch]


HF_MODEL_TYPES: dict[str, Family] = {model_type: f for f in FAMILIES.values() for model_type in f.hf_model_types}
"""Hugging Face `model_type` -> the family that imports it (llama, mistral, qwen2, qwen3 -> `llama`)."""
