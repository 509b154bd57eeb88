"""Which metrics each step of a plan reports, so a sweep's `metric` is checked before any trial runs."""

from __future__ import annotations

from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import Plan, PlanStep
from llmrecipe.recipe.explain import did_you_mean

TRAINING_METRICS = ("steps", "tokens", "train_loss", "val_loss", "best_val_loss", "best_step", "tokens_per_s", "mfu",
                    "train_seconds", "peak_memory_bytes")
"""The numbers the trainer's summary gives for every training step (tests/test_sweep.py checks them against a
trained step's own)."""
CLASSIFY_METRICS = ("val_accuracy", "val_macro_f1")
"""What a classify fine-tune's validation adds."""
TRAINING_KINDS = ("pretrain", "finetune")


def reported_metrics(step: PlanStep) -> list[str]:
    """The numeric metrics `step` reports when it finishes."""
    if step.kind in TRAINING_KINDS:
        names = list(TRAINING_METRICS)
        if step.spec.get("task") == "classify":
            names += CLASSIFY_METRICS
        if step.kind == "finetune" and step.spec.get("task") != "classify":
            names.append("base_val_loss")  # the starting model's validation loss, for comparison
        return names
    if step.kind == "evaluate":
        from llmrecipe.evals.registry import suite_metrics

        return [f"{name}_{metric}" for name, suite in step.spec["suites"].items()
                for metric in suite_metrics(suite["type"])]
    return []


def check_metric(plan: Plan, metric: str, where: str = "sweep.metric") -> tuple[str, str]:
    """`steps.<step>.<name>` -> (step, name), or a RecipeError naming `sweep.metric` and what the steps report."""
    _, step_name, name = metric.split(".", 2)
    names = [step.name for step in plan.steps if not step.implicit]
    if step_name not in names:
        raise RecipeError(f"{where} = {metric!r}: the recipe has no step '{step_name}'; "
                          f"{did_you_mean(step_name, names)}")
    reported = reported_metrics(plan.step(step_name))
    if name not in reported:
        available = ", ".join(f"steps.{step_name}.{n}" for n in reported) or "none"
        raise RecipeError(f"{where} = {metric!r}: step '{step_name}' ({plan.step(step_name).kind}) does not report "
                          f"'{name}'; it reports: {available}")
    return step_name, name


def model_step(plan: Plan, step_name: str) -> PlanStep | None:
    """The training step whose model a metric measures: the step itself, or the last training step it needs."""
    needed = plan.upstream_of({step_name})
    trained = [step for step in plan.steps if step.name in needed and step.kind in TRAINING_KINDS]
    return trained[-1] if trained else None
