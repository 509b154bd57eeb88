"""Issue 18, acceptance 2: the feedback loop end to end: serve, rate and correct, preference-tune, compare.

1. `recipes/feedback.toml` up to its SFT chat model (recipes/chat.toml's steps; steps already stored are reused),
   with more of the ChatterBot pairs held out than chat.toml holds (`--sft-val-fraction`), so the "user" has
   questions the SFT model never trained on.
2. That model is served on 127.0.0.1 with a serve log. The "user" asks each held-out question twice (a greedy
   answer and one sampled at temperature 1), rates both by token F1 against the file's answers (>= 0.5 good,
   >= 0.2 neutral, else bad) through POST /v1/feedback, and corrects the greedy answer with the file's answer.
3. The recipe's preference step (DPO against the SFT model) trains on the log. It holds a question out when a
   digest of it falls below its `val_fraction`, as the SFT step does, so with half the SFT's fraction it holds out
   about half the user's questions. Those held-out pairs are written as the evaluation files, and the evaluate step
   scores the SFT model and the tuned model on them: generated answers against the reference (exact match, F1,
   ROUGE-L, BLEU, chrF) and the pairs as two-way multiple choice (does the model give the chosen answer the higher
   log-likelihood, summed (`accuracy`) or per character (`accuracy_norm`)?). Held-out reward accuracy (the step's
   own metric, 0.5 at the start by construction) gets a bootstrap interval over the held-out pairs.
4. `llmrecipe compare` sets the two evaluations side by side with paired bootstrap intervals.

    python benchmarks/feedback_loop.py                            # workdir ./.llmrecipe-feedback
    python benchmarks/feedback_loop.py --workdir /tmp/loop --set steps.tuned.budget.epochs=2

What it does not measure: a real user (the "user" here is the file's reference answers, and it rates by word
overlap), or anything beyond this tiny model on a few hundred ChatterBot questions; with that few held-out pairs
the intervals are wide. The rejected answers are the SFT model's own, often long and repetitive, so summed
log-likelihood favours the shorter reference even before tuning. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from llmrecipe import api
from llmrecipe.evals.stats import confidence_interval
from llmrecipe.evals.suite import proportion
from llmrecipe.evals.text_metrics import token_f1
from llmrecipe.finetune.chat_data import conversation, read_rows
from llmrecipe.finetune.feedback_pairs import read_feedback_pairs
from llmrecipe.finetune.preference_data import held_out, pair_of
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.serve.app import ServeSettings
from llmrecipe.serve.server import background_server

REPO = Path(__file__).resolve().parent.parent
GOOD, NEUTRAL = 0.5, 0.2
"""Token F1 against the best-matching reference at or above which the user rates an answer 1 (good) or 0."""


@dataclass
class Question:
    text: str
    references: list[str]
    """Every answer the data file gives to this question, in file order; the first is the correction."""


def held_out_questions(plan, step: str) -> list[Question]:
    """The SFT step's held-out (validation) single-turn questions with all their reference answers."""
    spec = FinetuneSpec.model_validate(plan.step(step).spec)
    path = Path(plan.step(step).external[0].path)
    questions: dict[str, Question] = {}
    for number, row in read_rows(path, spec.dataset)["val"]:
        messages = conversation(row, spec.dataset, path.name, number)
        if len(messages) != 2:  # the user asks one question; a longer conversation has no single answer to rate
            continue
        question = questions.setdefault(messages[0]["content"], Question(messages[0]["content"], []))
        question.references.append(messages[1]["content"])
    return list(questions.values())


def rating(answer: str, references: list[str]) -> int:
    """The user's rating: 1 good, 0 neutral, -1 bad, by the best token F1 against the references."""
    best = max(token_f1(answer, reference) for reference in references)
    return 1 if best >= GOOD else 0 if best >= NEUTRAL else -1


def drive(url: str, model: str, questions: list[Question], max_tokens: int, seed: int) -> dict[str, int]:
    """Ask, rate and correct, as a user would through the HTTP API; counts of what was sent."""
    counts = {"questions": len(questions), "answers": 0, "ratings": {"1": 0, "0": 0, "-1": 0}, "corrections": 0}
    with httpx.Client(base_url=url, timeout=600) as client:
        for index, question in enumerate(questions):
            for temperature in (0.0, 1.0):  # the greedy answer, then a sampled one for the user to rate against it
                reply = post(client, "/v1/chat/completions", {
                    "model": model, "messages": [{"role": "user", "content": question.text}],
                    "max_tokens": max_tokens, "temperature": temperature, "seed": seed + index})
                answer = reply["choices"][0]["message"]["content"]
                score = rating(answer, question.references)
                feedback = {"completion_id": reply["id"], "rating": score}
                if temperature == 0.0 and answer.strip() != question.references[0].strip():
                    feedback["correction"] = question.references[0]
                    counts["corrections"] += 1
                post(client, "/v1/feedback", feedback)
                counts["answers"] += 1
                counts["ratings"][str(score)] += 1
    return counts


def post(client: httpx.Client, route: str, body: dict) -> dict:
    response = client.post(route, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST {route} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def serve_and_drive(model_dir: Path, log: Path, questions: list[Question], max_tokens: int, seed: int) -> dict:
    """Serve the model on a free loopback port with `log` as its serve log, and let the user talk to it."""
    log.unlink(missing_ok=True)  # a fresh log: feedback from an earlier run would pair with another model's answers
    model = api.open_model(model_dir)
    with background_server(model, ServeSettings(model_name="chat", log_path=log)) as url:
        started = time.perf_counter()
        counts = drive(url, "chat", questions, max_tokens, seed)
        counts["seconds"] = round(time.perf_counter() - started, 1)
    return counts


def step_holds_out(pair: dict, dataset) -> bool:
    """Whether the preference step holds this pair out, by the step's own rule."""
    return held_out(pair_of(pair, dataset, "serve log"), dataset)


def held_out_files(pairs: list[dict], is_held_out, folder: Path) -> dict[str, int]:
    """The evaluation files of the pairs the preference step holds out (`is_held_out(pair)`, its own rule):
    `held-out-answers.jsonl` (each held-out question once, its correction as the reference) and
    `held-out-pairs.jsonl` (each held-out
    pair as a two-way multiple choice, chosen first, in the chat format the model answers in)."""
    held = [pair for pair in pairs if is_held_out(pair)]
    answers: dict[str, str] = {}
    for pair in held:
        if pair["rule"] == "correction":
            answers.setdefault(question_of(pair), pair["chosen"])
    write_jsonl(folder / "held-out-answers.jsonl", [{"prompt": q, "response": a} for q, a in answers.items()])
    write_jsonl(folder / "held-out-pairs.jsonl", [
        {"context": CHAT_PROMPT.replace("{prompt}", question_of(pair)),
         "choices": [pair["chosen"] + END_OF_TURN, pair["rejected"] + END_OF_TURN], "answer": 0}
        for pair in held])
    return {"held_out_pairs": len(held), "held_out_questions": len(answers)}


CHAT_PROMPT = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
END_OF_TURN = "<|im_end|>"
"""recipes/chat.toml's ChatML format, as its evaluate step and recipes/feedback.toml's write it."""


def question_of(pair: dict) -> str:
    prompt = pair["prompt"]
    return prompt if isinstance(prompt, str) else next(m["content"] for m in prompt if m["role"] == "user")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "feedback.toml"))
    parser.add_argument("--workdir", default=".llmrecipe-feedback")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="more recipe overrides")
    parser.add_argument("--sft-val-fraction", type=float, default=0.3,
                        help="share of the ChatterBot questions the SFT model does not train on (chat.toml: 0.1)")
    parser.add_argument("--sft-epochs", type=float, default=6, help="SFT budget (chat.toml: 30, early stopping)")
    parser.add_argument("--max-tokens", type=int, default=48, help="longest answer the server writes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled answers")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    loop = workdir / "feedback-loop"
    loop.mkdir(parents=True, exist_ok=True)
    log = loop / "serve-log.jsonl"
    # The preference step holds out a question when its digest is below its val_fraction, as the SFT step does: all
    # the user's questions are below the SFT's fraction, so half of it holds out half of them.
    overrides = [f"steps.chat.dataset.val_fraction={args.sft_val_fraction}",
                 f"steps.chat.budget.epochs={args.sft_epochs}",
                 f"steps.tuned.dataset.val_fraction={args.sft_val_fraction / 2}", *args.overrides]
    started = time.perf_counter()

    plan = run_recipe(args.recipe, overrides, workdir, "chat")[1]
    sft_seconds = time.perf_counter() - started
    questions = held_out_questions(plan, "chat")
    driven = serve_and_drive(api.artifact(plan, "chat"), log, questions, args.max_tokens, args.seed)

    pairs = read_feedback_pairs(log).conversations_only()
    dataset = FinetuneSpec.model_validate(plan.step("tuned").spec).dataset
    held = held_out_files(pairs.rows, lambda pair: step_holds_out(pair, dataset), loop)
    overrides += [f"steps.tuned.dataset.path={log}",
                  f"steps.judged.suites.answers.data={loop / 'held-out-answers.jsonl'}",
                  f"steps.judged.suites.pairs.data={loop / 'held-out-pairs.jsonl'}"]
    tuned_run, plan = run_recipe(args.recipe, overrides, workdir, "judged")
    sft_run = run_recipe(args.recipe, [*overrides, "steps.judged.model=chat"], workdir, "judged")[0]
    compared = compare(args.recipe, overrides, workdir, tuned_run, sft_run)
    training = preference_metrics(plan)
    report(args, driven, pairs, held, training, compared, sft_seconds, time.perf_counter() - started)


def run_recipe(recipe: str, overrides: list[str], workdir: Path, step: str):
    """Run `step` of the recipe and what it needs (not chat.toml's own evaluation); the run id and the plan."""
    loaded = api.load(recipe, overrides)
    plan = api.compile(loaded, workdir)
    return api.run(loaded, plan=plan, only={step}).run_id, plan


def compare(recipe: str, overrides: list[str], workdir: Path, tuned_run: str, sft_run: str) -> dict:
    """`llmrecipe compare` of the two runs' `judged` evaluations, as a user runs it (its table is printed too)."""
    command = [sys.executable, "-m", "llmrecipe", "compare", recipe, tuned_run, sft_run, "--step", "judged",
               "--workdir", str(workdir)] + [f"--set={value}" for value in overrides]
    print("$ llmrecipe compare", recipe, tuned_run, sft_run, "--step judged", flush=True)
    print(subprocess.run(command, check=True, capture_output=True, text=True).stdout, flush=True)
    return json.loads(subprocess.run(command + ["--json"], check=True, capture_output=True, text=True).stdout)


def preference_metrics(plan) -> dict[str, float]:
    """The preference step's summary: its pairs, and its held-out metrics at the start (`base_val_*`: the policy is
    the reference, so reward accuracy is 0.5 by construction) and at the end (`val_*`)."""
    return next(step for step in api.status(plan) if step["step"] == "tuned")["metrics"]


def reward_accuracy_interval(accuracy: float, pairs: int) -> tuple[float, float]:
    """95% percentile bootstrap interval of a share of `pairs` (the step logs the share, not each pair)."""
    right = round(accuracy * pairs)
    columns = {"right": np.array([1.0] * right + [0.0] * (pairs - right)), "count": np.ones(pairs)}
    return confidence_interval(proportion("right"), columns, resamples=1000, seed=0)


VERDICTS = {"A better": "tuned better", "B better": "sft better"}


def report(args, driven, pairs, held, training, compared, sft_seconds, seconds) -> None:
    ratings = driven["ratings"]
    low, high = reward_accuracy_interval(training["val_reward_accuracy"], training["val_pairs"])
    print(f"SFT chat model (recipes/chat.toml, {args.sft_val_fraction:.0%} of ChatterBot held out, "
          f"{args.sft_epochs:g} epochs): {sft_seconds:.0f} s (stored steps are reused)")
    print(f"user: {driven['questions']} held-out questions, {driven['answers']} answers in {driven['seconds']} s; "
          f"ratings good {ratings['1']}, neutral {ratings['0']}, bad {ratings['-1']}; "
          f"{driven['corrections']} corrected")
    print(f"serve log: {pairs.summary()}")
    print(f"preference step: {training['train_pairs']} train pairs, {training['val_pairs']} held out "
          f"({held['held_out_questions']} questions); held-out reward accuracy "
          f"{training['base_val_reward_accuracy']:.4f} -> {training['val_reward_accuracy']:.4f} "
          f"[95% CI {low:.4f}, {high:.4f}], margin "
          f"{training['base_val_reward_margin']:.3g} -> {training['val_reward_margin']:.3g}; held-out log-probs chosen "
          f"{training['base_val_chosen_logp']:.2f} -> {training['val_chosen_logp']:.2f}, rejected "
          f"{training['base_val_rejected_logp']:.2f} -> {training['val_rejected_logp']:.2f}")
    figures = {row["suite"] + "." + row["metric"]: row for row in compared["rows"] if row["metric"] != "*"}
    for name, row in figures.items():
        print(f"  {name}: tuned {row['a']:.4f} vs sft {row['b']:.4f}, difference {row['difference']:+.4f} "
              f"[95% CI {row['low']:+.4f}, {row['high']:+.4f}] -> {VERDICTS.get(row['verdict'], row['verdict'])}")
    measured = ("loss", "reward_accuracy", "reward_margin", "chosen_logp", "rejected_logp")
    print(json.dumps({
        "questions": driven["questions"], "answers": driven["answers"], "ratings": ratings,
        "corrections": driven["corrections"], "serve_log_lines": pairs.lines, "pairs": len(pairs.rows),
        "pairs_by_rule": dict(pairs.built), "skipped": dict(pairs.skipped), **held,
        "train_pairs": training["train_pairs"], "val_pairs": training["val_pairs"],
        "held_out_start": {name: round(training[f"base_val_{name}"], 4) for name in measured},
        "held_out_end": {name: round(training[f"val_{name}"], 4) for name in measured},
        "held_out_reward_accuracy_ci": [round(low, 4), round(high, 4)],
        "compare": {name: {"tuned": round(row["a"], 4), "sft": round(row["b"], 4),
                           "difference": round(row["difference"], 4), "low": round(row["low"], 4),
                           "high": round(row["high"], 4), "verdict": VERDICTS.get(row["verdict"], row["verdict"])}
                    for name, row in figures.items()},
        "sft_val_fraction": args.sft_val_fraction, "sft_epochs": args.sft_epochs, "max_tokens": args.max_tokens,
        "seconds": round(seconds, 1),
    }))


if __name__ == "__main__":
    main()
