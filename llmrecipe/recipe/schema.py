"""The JSON schema of recipes, generated from the pydantic models (the single source of truth)."""

from __future__ import annotations

from typing import Any

from llmrecipe.recipe.recipe import Recipe


def recipe_json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema()
    # `extends` is consumed by the loader before validation, so the model does not have it; editors must.
    schema["properties"] = {
        "extends": {"type": "string", "description": "A parent recipe (path relative to this file) merged under this one."},
        **schema["properties"],
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "title": "llmrecipe recipe"}
