"""Issue 5, acceptance 2: after SFT, does greedy generation stop by itself, and is held-out response loss lower?

Runs the recipe (steps already in the store are reused), then on the SFT step's held-out examples:
- greedy answers to each held-out prompt: the share that ends with the end-of-turn token (target >= 95%);
- loss per response token (content + end-of-turn) of the SFT model and of the base model it started from
  (the base with the same grown vocabulary, new rows at the mean embedding, as SFT starts).

    python benchmarks/sft_acceptance.py                       # recipes/chat.toml, workdir ./.llmrecipe
    python benchmarks/sft_acceptance.py --workdir /tmp/chat --set steps.chat.budget.epochs=4

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

from llmrecipe import api
from llmrecipe.finetune.chat_data import conversation, load_examples, read_rows
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.models.build import load_trained
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.steps.finetune.model_io import starting_model
from llmrecipe.training.tasks.packed import Packed, PackedTask, pack

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "chat.toml"))
    parser.add_argument("--step", default=None, help="the sft finetune step (default: the first one)")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()

    loaded = api.load(args.recipe, args.overrides)
    plan = api.compile(loaded, args.workdir)
    started = time.perf_counter()
    api.run(loaded, plan=plan, workdir=args.workdir)
    run_seconds = time.perf_counter() - started
    name = args.step or next(s.name for s in plan.steps if s.kind == "finetune" and s.spec["task"] == "sft")
    step = plan.step(name)
    spec = FinetuneSpec.model_validate(step.spec)
    sft_dir, base_dir = api.artifact(plan, name), api.artifact(plan, step.inputs["model"])
    base_tokenizer_dir = api.artifact(plan, step.inputs["tokenizer"])
    data_path = Path(step.external[0].path)

    tokenizer = Tokenizer.from_file(str(sft_dir / "tokenizer.json"))
    held_out = load_examples(data_path, spec.dataset, tokenizer, spec.chat_template, spec.end_of_turn,
                             spec.seq_len + 1, spec.truncation)[0]["val"]
    losses = response_losses(spec, sft_dir, base_dir, base_tokenizer_dir, tokenizer, held_out)
    stops = greedy_stops(sft_dir, data_path, spec, args.max_new_tokens)

    print(f"run (or cache check) took {run_seconds:.0f} s; held-out examples: {len(held_out)}")
    print(f"held-out response-token loss: sft {losses['sft']:.4f} vs base {losses['base']:.4f}")
    print(f"greedy answers ending with the end-of-turn token: {stops['ended']}/{stops['prompts']} "
          f"= {stops['rate']:.1%} (target >= 95%); at the token limit: {stops['at_limit']}; "
          f"distinct answers: {stops['distinct']}")
    for sample in stops["samples"]:
        print(f"  Q: {sample['prompt']!r}\n  A: {sample['answer']!r}")
    print(json.dumps({
        "recipe": Path(args.recipe).name, "step": name, "held_out_examples": len(held_out),
        "sft_response_loss": round(losses["sft"], 4), "base_response_loss": round(losses["base"], 4),
        "loss_lower_than_base": losses["sft"] < losses["base"], "eot_rate": round(stops["rate"], 4),
        "eot_target_met": stops["rate"] >= 0.95, "prompts": stops["prompts"], "distinct_answers": stops["distinct"],
        "max_new_tokens": args.max_new_tokens,
    }))


def response_losses(spec: FinetuneSpec, sft_dir: Path, base_dir: Path, base_tokenizer_dir: Path,
                    tokenizer: Tokenizer, held_out: list) -> dict[str, float]:
    """Mean loss per response token on the packed held-out examples, fp32, for the SFT model and its base."""
    packed = pack(held_out, spec.seq_len)
    sft, _ = load_trained(sft_dir)
    base_tokenizer = Tokenizer.from_file(str(base_tokenizer_dir / "tokenizer.json"))
    new_ids = [tokenizer.token_to_id(t) for t in spec.special_tokens if base_tokenizer.token_to_id(t) is None]
    base = starting_model(spec, base_dir, new_ids, base_tokenizer.get_vocab_size(with_added_tokens=True)).eval()
    return {"sft": held_out_loss(sft, packed), "base": held_out_loss(base, packed)}


@torch.no_grad()
def held_out_loss(model: torch.nn.Module, packed: Packed) -> float:
    """The SFT task's validation loss over every packed row, fp32 on the CPU."""
    task = PackedTask(packed, packed, seed=0, batch_size=len(packed), eval_batches=1, micro_batch_size=8)
    objective = task.objective(model.eval())
    totals: dict[str, torch.Tensor] = {}
    for batch in task.validation_batches():
        for name, value in objective(**batch).items():
            totals[name] = totals.get(name, 0) + value
    return task.validation_metrics(totals)["val_loss"]


def greedy_stops(sft_dir: Path, data_path: Path, spec: FinetuneSpec, max_new_tokens: int) -> dict:
    """Greedy answers to every held-out conversation up to its last assistant turn."""
    model = api.open_model(sft_dir, backend="torch")
    rows = read_rows(data_path, spec.dataset)["val"]
    prompts, texts = [], []
    for number, row in rows:
        messages = conversation(row, spec.dataset, data_path.name, number)
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        texts.append(messages[last - 1]["content"] if last else "")
        prompts.append(model.engine.encode(model.chat_prompt(messages[:last])))
    params = SamplingParams(max_tokens=max_new_tokens, temperature=0.0, seed=0)
    completions = []
    for start in range(0, len(prompts), 16):
        completions += model.engine.generate(prompts[start : start + 16], params)
    eot = model.engine.eot_id
    ended = sum(c.finish_reason == "stop" and bool(c.token_ids) and c.token_ids[-1] == eot for c in completions)
    samples = [{"prompt": p, "answer": c.text} for p, c in list(zip(texts, completions))[:5]]
    return {"prompts": len(completions), "ended": ended, "rate": ended / max(1, len(completions)),
            "distinct": len({c.text for c in completions}),
            "at_limit": sum(c.finish_reason == "length" for c in completions), "samples": samples}


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    main()
