"""`llmrecipe generate`: settings from the command line, prompts in, text out (streamed for one prompt)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TextIO

from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.generate.sampling import SamplingParams


def sampling_from_args(args: argparse.Namespace) -> SamplingParams:
    problems = [
        f"--{name} {value}: {rule}"
        for name, value, ok, rule in (
            ("max-tokens", args.max_tokens, args.max_tokens >= 1, "give at least 1"),
            ("temperature", args.temperature, args.temperature >= 0, "give 0 (greedy) or more"),
            ("top-k", args.top_k, args.top_k is None or args.top_k >= 1, "give 1 or more"),
            ("top-p", args.top_p, 0 < args.top_p <= 1, "give a value in (0, 1]"),
            ("repetition-penalty", args.repetition_penalty, args.repetition_penalty >= 0.01, "give 0.01 or more"),
        )
        if not ok
    ]
    if problems:
        raise ValueError("; ".join(problems))
    return SamplingParams(
        max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        repetition_penalty=args.repetition_penalty, stop=tuple(args.stop), seed=args.seed,
    )


def per_row(params: SamplingParams, rows: int) -> list[SamplingParams]:
    """Row i samples with seed + i: a batch of the same prompt gives different samples, each one reproducible (and
    a single prompt samples with the seed itself)."""
    if params.seed is None:
        return [params] * rows  # the engine draws a fresh seed for each row
    return [replace(params, seed=params.seed + i) for i in range(rows)]


def prompt_texts(model: LoadedModel, args: argparse.Namespace) -> list[str]:
    if not args.chat:
        return list(args.prompt)
    system = [{"role": "system", "content": args.system}] if args.system else []
    return [model.chat_prompt([*system, {"role": "user", "content": prompt}]) for prompt in args.prompt]


def generate_to(out: TextIO, model: LoadedModel, args: argparse.Namespace, err: TextIO | None = None) -> int:
    """Continuations on `out`; with one prompt streamed as they come, and an empty one explained on `err`."""
    params = sampling_from_args(args)
    engine = model.engine
    prompts = [engine.encode(text) for text in prompt_texts(model, args)]
    for prompt in prompts:
        engine.check_prompt(prompt)
    if len(prompts) == 1:  # one prompt: show the text as it comes
        ids, text, reason = [], "", ""
        for delta in engine.stream(prompts, params):
            out.write(delta.text)
            out.flush()
            ids.append(delta.token_id)
            text, reason = text + delta.text, delta.finish_reason or ""
        if text:
            out.write("\n")
        else:  # a blank line would look like a failure: say why there is nothing
            print(why_empty(engine, ids, reason), file=err or sys.stderr)
        return 0
    for number, (text, completion) in enumerate(zip(args.prompt, engine.generate(prompts, per_row(params, len(prompts)))),
                                                start=1):
        shown = completion.text or why_empty(engine, completion.token_ids, completion.finish_reason)
        out.write(f"--- {number}: {text!r} ({completion.finish_reason})\n{shown}\n")
    return 0


def why_empty(engine, token_ids: list[int], finish_reason: str) -> str:
    """The note shown instead of an empty continuation (the engine always generates at least one token)."""
    if token_ids[-1] == engine.eot_id and engine.tokenizer is not None:
        eot = engine.tokenizer.id_to_token(engine.eot_id)
        before = "" if len(token_ids) == 1 else f" after {len(token_ids) - 1} token(s) without visible text"
        return f"(no text: the model ended the continuation with its end-of-text token {eot}{before})"
    if finish_reason == "stop":
        return "(no text: the output began with a stop sequence, which is not shown)"
    return f"(no text: the {len(token_ids)} generated token(s) decode to no visible text)"
