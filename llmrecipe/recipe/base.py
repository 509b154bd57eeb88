"""The one pydantic base every recipe section inherits: unknown keys are errors, values are frozen."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

STEP_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")

# Upper bounds of the sizes a recipe sets. Each is far beyond any model or run this tool can train, so it refuses
# only typing slips (an extra 000, a float where an int was meant) before they reach an allocation; the plan
# checks what the sizes add up to (llmrecipe/plan/limits.py).
MAX_LAYERS = 1024
"""Layers: the deepest published transformers have a few hundred."""
MAX_WIDTH = 65_536
"""Model width, heads' total width: twice the widest published model."""
MAX_HEADS = 1024
"""Attention heads."""
MAX_SEQ_LEN = 1_048_576
"""Tokens of context (2^20)."""
MAX_BATCH = 1_048_576
"""Sequences or examples in one batch (2^20)."""
MAX_BATCH_TOKENS = 2**31
"""Tokens in one optimizer step."""
MAX_EVAL_BATCHES = 100_000
"""Batches of one validation measurement."""
MAX_PROCESSES = 1024
"""Processes or workers started on one machine."""


class Section(BaseModel):
    """A table of the recipe. Defaults live on fields; docstrings under fields become schema text."""

    model_config = ConfigDict(
        extra="forbid",  # `training.stpes` must fail loudly, never silently fall back to a default
        strict=True,  # a hand-written file: `n_layer = true` or `lr = "2e-3"` is a mistake, not a 1 or a number
        allow_inf_nan=False,  # `lr = inf` (or 1e999, which TOML reads as inf) can only be a mistake
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _integers_fit_64_bits(cls, data: Any) -> Any:
        """TOML integers have no size limit, but every number here ends up in torch, numpy or a float: one past
        64 bits would overflow there, long after `validate` said yes."""
        if isinstance(data, dict):
            for key, value in data.items():
                for item in value if isinstance(value, list) else (value,):
                    if isinstance(item, int) and not -(2**63) <= item < 2**63:
                        digits = str(item)
                        shown = digits if len(digits) <= 24 else f"{digits[:12]}...({len(digits)} digits)"
                        raise ValueError(f"{key} = {shown} does not fit in 64 bits (at most 9223372036854775807); "
                                         "give a smaller number")
        return data


def _step_name(value: str) -> str:
    if not STEP_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a step name: use up to 64 lower-case letters, digits, '_' or '-', starting with a letter"
        )
    return value


StepName = Annotated[str, AfterValidator(_step_name)]
"""A reference to another step of the recipe by its name under [steps]."""

RUN_NAME = re.compile(r"\w[\w. -]{0,99}")


def _run_name(value: str) -> str:
    # The name becomes part of a folder name under <workdir>/runs: no separator, `..`, NUL or control character may
    # reach the file system, so anything else is refused rather than rewritten behind the user's back.
    if not RUN_NAME.fullmatch(value) or value != value.rstrip():
        raise ValueError(
            "a run name becomes part of a folder name: use 1 to 100 letters, digits, '_', '.', '-' or spaces, "
            "starting with a letter or digit (no '/', '\\', '..' or control characters)"
        )
    return value


RunName = Annotated[str, AfterValidator(_run_name)]
"""The run's name: one safe folder-name component."""
