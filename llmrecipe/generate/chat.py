"""Chat prompts: messages rendered with the Jinja chat template a fine-tuned model records.

The template is found, as in Hugging Face's layout, in `chat_template.jinja` or as the `chat_template`
entry of `tokenizer_config.json` or `chat_template.json`. A model without one was never taught a
conversation format, so chat with it is refused instead of guessed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class NoChatTemplate(ValueError):
    def __init__(self, folder: Path):
        super().__init__(
            f"the model in {folder} has no chat template (no chat_template.jinja, and no `chat_template` entry in "
            "tokenizer_config.json or chat_template.json): it was not fine-tuned for chat. "
            "Use a plain prompt (completions), or chat with a model from a fine-tuning step that records a template."
        )


def find_chat_template(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.json"):
        path = folder / name
        if path.is_file():
            template = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
            if isinstance(template, str):
                return template
    return None


def render_chat(template: str, messages: list[dict[str, Any]], **special_tokens: str) -> str:
    """Messages [{"role", "content"}] -> the prompt text, ending where the assistant's answer begins.

    Sandboxed: a template comes from an artifact file and must not reach Python objects.
    """
    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    environment.globals["raise_exception"] = _raise
    try:
        return environment.from_string(template).render(
            messages=messages, add_generation_prompt=True, **special_tokens
        )
    except TemplateError as error:
        raise ValueError(f"the model's chat template failed on these messages: {error}") from None


def _raise(message: str) -> None:
    raise TemplateError(message)
