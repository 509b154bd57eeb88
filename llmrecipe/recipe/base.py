"""The one pydantic base every recipe section inherits: unknown keys are errors, values are frozen."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")


class Section(BaseModel):
    """A table of the recipe. Defaults live on fields; docstrings under fields become schema text."""

    model_config = ConfigDict(
        extra="forbid",  # `training.stpes` must fail loudly, never silently fall back to a default
        frozen=True,
        use_attribute_docstrings=True,
        validate_default=True,
    )


def _step_name(value: str) -> str:
    if not STEP_NAME.match(value):
        raise ValueError(
            f"'{value}' is not a step name: use lower-case letters, digits, '_' or '-', starting with a letter"
        )
    return value


StepName = Annotated[str, AfterValidator(_step_name)]
"""A reference to another step of the recipe by its name under [steps]."""
