"""Turn pydantic's validation errors into one line each: TOML path, bad value, and how to fix it."""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import Any, Union

from pydantic import BaseModel, ValidationError


def explain_validation_error(error: ValidationError, root: type[BaseModel], source: str) -> list[str]:
    return [_explain_one(item, root, source) for item in error.errors(include_url=False)]


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """`"; did you mean 'steps'?"` when a close match exists, else the list of what is allowed."""
    choices = sorted(choices)
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    return "expected one of: " + ", ".join(choices) if choices else "remove it"


def _explain_one(item: dict[str, Any], root: type[BaseModel], source: str) -> str:
    path, parent = _display_path(item["loc"], root)
    kind = item["type"]
    where = f"{source}: {path or '(top level)'}"
    if kind == "extra_forbidden":
        key = path.rsplit(".", 1)[-1]
        fields = _field_names(parent) if parent is not None else []
        return f"{where}: unknown key '{key}'; {did_you_mean(key, fields)}"
    if kind == "missing":
        return f"{where}: required key is missing; add it"
    if kind == "union_tag_invalid":
        ctx = item["ctx"]
        tags = [t.strip(" '") for t in ctx["expected_tags"].split(",")]
        return f"{where}.{ctx['discriminator'].strip(chr(39))} = '{ctx['tag']}': unknown; {did_you_mean(ctx['tag'], tags)}"
    if kind == "union_tag_not_found":
        field = item["ctx"]["discriminator"].strip("'")
        return f"{where}: missing `{field}`; say what this table is, e.g. {field} = \"...\""
    message = item["msg"].removeprefix("Value error, ")
    if kind in {"model_type", "model_attributes_type", "dict_type"}:
        return f"{where} = {_short(item['input'])}: expected a table (TOML [section] or {{ key = value }})"
    if isinstance(item.get("input"), (dict, list)) and kind in {"value_error", "assertion_error", "too_short"}:
        return f"{where}: {message}"
    return f"{where} = {_short(item.get('input'))}: {MESSAGES.get(kind, '{message}').format(message=message, **item.get('ctx', {}))}"


MESSAGES = {
    "int_type": "expected a whole number, written without quotes",
    "float_type": "expected a number, written without quotes",
    "bool_type": "expected true or false, written without quotes",
    "string_type": "expected a string, in quotes",
    "less_than_equal": "at most {le} is allowed; give a smaller value",
    "less_than": "must be less than {lt}; give a smaller value",
    "greater_than_equal": "at least {ge} is needed; give a larger value",
    "greater_than": "must be more than {gt}; give a larger value",
    "finite_number": "not a finite number; give an ordinary number (inf, nan and out-of-range values like 1e999 are not)",
}
"""Wrong types and numbers out of range, said in TOML's terms with the fix (the limit and which way to go)."""


def _short(value: Any) -> str:
    if isinstance(value, bool):  # shown as the TOML the user wrote
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _display_path(loc: tuple, root: type[BaseModel]) -> tuple[str, type[BaseModel] | None]:
    """Follow pydantic's error location through the models; drop union tags that are not TOML keys.

    Returns the TOML path (`steps.base.optim.lr`) and the model that holds its last key.
    """
    parts: list[str] = []
    current: Any = root
    parent: type[BaseModel] | None = None
    for entry in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            parent = current
            field = current.model_fields.get(str(entry))
            parts.append(str(entry))
            current = field.annotation if field is not None else None
        elif typing.get_origin(current) is dict:
            parts.append("(step name)" if entry == "[key]" else toml_key(str(entry)))
            current = typing.get_args(current)[1]
        elif typing.get_origin(current) is list:
            parts.append(f"[{entry}]")
            current = typing.get_args(current)[0]
        elif _is_union(current):
            member = _union_member(current, entry)
            if member is None:  # a location inside one member of a plain Optional / value union
                parts.append(str(entry))
            current = member
        else:
            parts.append(str(entry))
            current = None
    return ".".join(parts).replace(".[", "["), parent


def toml_key(key: str) -> str:
    """A table key as TOML writes it: bare when it can be (`lr`), quoted otherwise (`"steps.base.optim.lr"`)."""
    return key if BARE_KEY.fullmatch(key) else '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _unwrap(members[0])
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _union_member(union: Any, tag: Any) -> Any:
    """The member of a discriminated union whose tag value (e.g. kind = "pretrain") is `tag`."""
    for member in typing.get_args(union):
        member = _unwrap(member)
        if isinstance(member, type) and issubclass(member, BaseModel):
            for field in member.model_fields.values():
                if typing.get_origin(field.annotation) is typing.Literal and typing.get_args(field.annotation) == (tag,):
                    return member
    return None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]
