"""Reading a Hugging Face config.json strictly: every option that changes what a model computes is either mapped
or refused by name, never guessed. Torch-free."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import CheckpointError
from llmrecipe.models.shape import RopeScaling


def required(config: dict[str, Any], key: str) -> Any:
    if config.get(key) is None:
        raise CheckpointError(f"config.json has no `{key}`, which a `{config.get('model_type')}` model needs")
    return config[key]


def expect(config: dict[str, Any], key: str, supported: tuple[Any, ...], default: Any) -> Any:
    """The option's value (its transformers default when absent) when it is one of `supported`, else an error."""
    value = config.get(key, default)
    if value not in supported:
        shown = ", ".join(repr(v) for v in supported)
        raise CheckpointError(f"config.json: {key} = {value!r} is not supported for `{config.get('model_type')}` "
                              f"models; supported: {shown}")
    return value


def rope_settings(config: dict[str, Any]) -> tuple[float, RopeScaling | None]:
    """(rope_theta, Llama 3 scaling or None) from either layout: transformers 5's `rope_parameters` or the older
    top-level `rope_theta` and `rope_scaling`."""
    parameters = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    merged = {**scaling, **parameters}
    theta = float(merged.get("rope_theta", config.get("rope_theta", 10000.0)))
    kind = merged.get("rope_type") or merged.get("type") or "default"
    if merged.get("partial_rotary_factor", config.get("partial_rotary_factor", 1.0)) != 1.0:
        raise CheckpointError("config.json: partial_rotary_factor != 1 (rotation of part of each head) is not "
                              "supported; supported: every dimension rotated")
    if kind == "default":
        return theta, None
    if kind != "llama3":
        raise CheckpointError(f"config.json: rope type '{kind}' is not supported; supported: 'default' (plain "
                              "rotary angles) and 'llama3'")
    try:
        return theta, RopeScaling(
            factor=float(merged["factor"]), low_freq_factor=float(merged["low_freq_factor"]),
            high_freq_factor=float(merged["high_freq_factor"]),
            original_max_position_embeddings=int(merged["original_max_position_embeddings"]))
    except KeyError as missing:
        raise CheckpointError(f"config.json: rope type 'llama3' without {missing}") from None
