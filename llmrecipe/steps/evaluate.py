"""Executor of `evaluate`: run each named suite on the trained model (fp32, TF32 matmuls on GPUs, no gradients,
batched).

Writes into its folder:
- `results.json`: per suite its type, metrics with 95% bootstrap intervals, extra numbers, the worst examples;
- `examples/<suite>.jsonl`: one line per example with its scores (what `llmrecipe compare` pairs) and details;
- `samples.md` for a samples suite, and PNG plots for suites that have them.
Returns flat metrics `<suite>_<metric>` (e.g. `val_loss`, `siqa_accuracy`) for the run's summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from llmrecipe.errors import StepError
from llmrecipe.evals.registry import suite_metrics, suite_module
from llmrecipe.evals.stats import values_with_intervals
from llmrecipe.evals.suite import SuiteEnv, SuiteResult
from llmrecipe.models.classifier import is_classifier_artifact, load_classifier
from llmrecipe.models.build import load_trained
from llmrecipe.models.registry import family
from llmrecipe.plan.specs import EvaluateSpec
from llmrecipe.recipe.evaluate import SUITES_WITH_DATA, SuiteConfig
from llmrecipe.run.context import StepContext
from llmrecipe.tokenizer.bytes import load_tokenizer
from llmrecipe.training.device import prepare_device

PLOTTED = {"multiple_choice": ("accuracy", "accuracy_norm"), "qa_factuality": ("accuracy", "hallucination_rate"),
           "semantic_similarity": ("cosine", "bertscore_precision", "bertscore_recall", "bertscore_f1")}
"""Suite type -> the metrics drawn as bars with their intervals."""
ENCODER_DECODER_SUITES = ("generation", "semantic_similarity", "qa_factuality", "samples", "multiple_choice")
"""Suite types that run on encoder-decoders too: those that generate (through the decoding engine; semantic
similarity with an encoder of its own), and multiple choice (the decoder's log-likelihood of each choice given the
encoded context)."""


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = EvaluateSpec.model_validate(raw_spec)
    prepare_device(spec.device, tf32=True)
    model = load_evaluated_model(ctx.inputs["model"], spec)
    tokenizer, tokenizer_meta = load_tokenizer(ctx.inputs["tokenizer"])
    files = {f.source: f for f in ctx.external}  # source = the suite's position (llmrecipe/evals/locate.py)
    (ctx.out_dir / "examples").mkdir()
    results: dict[str, Any] = {}
    for index, (name, config) in enumerate(spec.suites.items()):
        env = SuiteEnv(
            name=name, model=model, tokenizer=tokenizer, eot_id=tokenizer_meta["eot_id"],
            vocab_size=tokenizer_meta["vocab_size"], tokens_dir=ctx.inputs.get("tokens"),  # none for an import
            data_path=Path(files[index].path) if index in files else None, batch_size=spec.batch_size,
            device=spec.device, seed=spec.seed, worst=spec.worst, bootstrap=spec.bootstrap, out_dir=ctx.out_dir,
            ctx=ctx,
        )
        results[name] = run_suite(config, env, spec)
        results[name]["data_sha256"] = files[index].sha256 if index in files else None  # compare pairs on equal data
    (ctx.out_dir / "results.json").write_text(json.dumps({"suites": results}, indent=2, allow_nan=False) + "\n")
    return {
        f"{name}_{key}": number
        for name, summary in results.items()
        for key, number in {**summary["metrics"], **summary["extra"]}.items()
        if number is not None
    }


def load_evaluated_model(folder: Path, spec: EvaluateSpec) -> torch.nn.Module:
    """A causal language model, or a classifier (a `classify` fine-tune) for classification suites only."""
    if is_classifier_artifact(folder):
        others = [name for name, config in spec.suites.items() if config.type != "classification"]
        if others:
            raise StepError(f"suites {others} score a language model, but this model is a classifier (a classify "
                            "fine-tune); evaluate its `init` model with them, or give it only classification suites")
        return load_classifier(folder, spec.device)
    model, shape = load_trained(folder, spec.device)
    arch = family(shape.arch)
    if arch.encoder_decoder:
        others = [name for name, config in spec.suites.items() if config.type not in ENCODER_DECODER_SUITES]
        if others:
            raise StepError(f"suites {others} score windows of a token stream with a decoder-only model; a "
                            f"`{shape.arch}` encoder-decoder runs these suite types: {', '.join(ENCODER_DECODER_SUITES)}")
    elif not arch.causal:
        raise StepError(f"evaluation suites score a causal decoder; a `{shape.arch}` model predicts masked tokens "
                        "instead")
    return model


def run_suite(config: SuiteConfig, env: SuiteEnv, spec: EvaluateSpec) -> dict[str, Any]:
    """Run one suite; write its examples and plots; its summary for results.json."""
    field = SUITES_WITH_DATA.get(config.type)
    if field and getattr(config, field) is not None and env.data_path is None:
        raise StepError(f"suite {env.name}: its {field} file was not handed to the step; run it through a recipe")
    env.ctx.log(f"suite {env.name} ({config.type})")
    outcome = suite_module(config.type).run(config, env)
    if outcome.note:
        env.ctx.log(f"suite {env.name}: {outcome.note}")
    summary = summarize(config.type, outcome, spec)
    summary["plots"] = [*outcome.plots, *draw_plots(env.name, config.type, summary, env.out_dir)]
    write_examples(env.out_dir / "examples" / f"{env.name}.jsonl", outcome)
    return summary


def summarize(suite_type: str, outcome: SuiteResult, spec: EvaluateSpec) -> dict[str, Any]:
    """Metric values with their bootstrap intervals; empty suites report no metrics, only why."""
    examples = len(next(iter(outcome.columns.values()))) if outcome.columns else 0
    summary: dict[str, Any] = {"type": suite_type, "examples": examples, "metrics": {}, "intervals": {}}
    if examples:
        found = values_with_intervals(suite_metrics(suite_type), outcome.columns, spec.bootstrap, spec.seed)
        for metric_name, (number, low, high) in found.items():
            summary["metrics"][metric_name] = finite(number)
            summary["intervals"][metric_name] = [finite(low), finite(high)]
    summary.update(extra=outcome.extra, worst=outcome.worst, note=outcome.note)
    if outcome.tables:
        summary["tables"] = outcome.tables
    return summary


def draw_plots(name: str, suite_type: str, summary: dict[str, Any], out_dir: Path) -> list[str]:
    shown = [m for m in PLOTTED.get(suite_type, ()) if summary["metrics"].get(m) is not None]
    if not shown:
        return []
    from llmrecipe.plots import bar_with_intervals

    bars = {m: (summary["metrics"][m], *summary["intervals"][m]) for m in shown}
    path = out_dir / f"{name}.png"
    bar_with_intervals(bars, path, f"{name} ({summary['examples']} examples, 95% CI)", summary["metrics"].get("chance"))
    return [path.name]


def write_examples(path: Path, outcome: SuiteResult) -> None:
    names = list(outcome.columns)
    with open(path, "w", encoding="utf-8") as f:
        for index, details in enumerate(outcome.examples):
            scores = {n: float(outcome.columns[n][index]) for n in names} if names else {}
            f.write(json.dumps({"id": index, "scores": scores, **details}, allow_nan=False) + "\n")


def finite(number: float) -> float | None:
    """JSON has no NaN: an undefined metric (no answered question, no bytes) is null."""
    return None if number is None or not math.isfinite(number) else float(number)

