"""Generation for the evaluation suites: the KV-cache engine (llmrecipe/generate/) on the evaluated model, on the
step's device, one prompt at a time with its own seed, so an answer depends on nothing but its prompt (not on the
batch size, nor on the prompts before it)."""

from __future__ import annotations

from typing import Any

from llmrecipe.generate.engine import Completion, Engine
from llmrecipe.generate.sampling import SamplingParams


def suite_engine(env: Any) -> Engine:
    """The engine over the suite's model (already on its device, in eval mode)."""
    from llmrecipe.generate.decoders import torch_decoder

    return Engine(torch_decoder(env.model, env.eot_id), env.tokenizer, env.eot_id, env.vocab_size)


def complete(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> Completion:
    """The continuation of one prompt. A prompt too long for the context keeps its end, leaving room for up to
    `max_tokens` new tokens (at least one); an encoder-decoder reads up to its whole context; `prompt_is_cut` says
    when it does."""
    return engine.generate([prompt_ids[-prompt_room(engine, params):]], params)[0]


def prompt_room(engine: Engine, params: SamplingParams) -> int:
    """The most prompt tokens kept: the context less the room for `max_tokens` new tokens (at least one); all of it
    for an encoder-decoder, whose prompt goes to the encoder."""
    if not engine.prompt_in_context:
        return engine.context
    return engine.context - max(1, min(params.max_tokens, engine.context - 1))


def prompt_is_cut(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> bool:
    return len(prompt_ids) > prompt_room(engine, params)
