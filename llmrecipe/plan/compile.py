"""Recipe -> Plan: resolve references, check the graph, insert implicit steps, derive, fingerprint.

Pure: no I/O. What the plan needs from the outside world (file digests, host facts, executor
versions) is handed in by the caller.
"""

from __future__ import annotations

import posixpath
from typing import Mapping

from llmrecipe.errors import RecipeError
from llmrecipe.plan import derive
from llmrecipe.plan.fingerprint import fingerprint
from llmrecipe.plan.graph import run_order
from llmrecipe.plan.plan import ExternalFile, Host, Plan, PlanStep
from llmrecipe.plan.specs import DataSpec, EvaluateSpec, ExportSpec, Spec, TokenizerSpec, TokenizeSpec
from llmrecipe.recipe.explain import did_you_mean
from llmrecipe.recipe.evaluate import SUITES_WITH_DATA, EvaluateStep, SuiteConfig
from llmrecipe.recipe.recipe import Recipe

REFERENCES: dict[str, dict[str, str]] = {
    "data": {},
    "tokenizer": {"data": "data"},
    "pretrain": {"data": "data", "tokenizer": "tokenizer"},
    "evaluate": {"model": "pretrain"},
    "export": {"model": "pretrain"},
}
"""For each step kind: field that names another step -> the kind that step must have."""


def check_references(recipe: Recipe) -> None:
    """Dangling references, then cycles, then kind mismatches; each a one-line error with its TOML path."""
    steps = recipe.steps
    dangling = [
        f"steps.{name}.{field} = '{target}': no step has that name; {did_you_mean(target, steps)}"
        for name, step in steps.items()
        for field in REFERENCES[step.kind]
        if (target := getattr(step, field)) not in steps
    ]
    if dangling:
        raise RecipeError(dangling)
    deps = {name: [getattr(step, f) for f in REFERENCES[step.kind]] for name, step in steps.items()}
    try:
        run_order(deps)
    except ValueError as cycle:
        raise RecipeError(f"steps: the step references form a cycle ({cycle}); a step cannot depend on itself") from None
    mismatched = [
        f"steps.{name}.{field} = '{target}': that is a {steps[target].kind} step; name a {wanted} step here"
        for name, step in steps.items()
        for field, wanted in REFERENCES[step.kind].items()
        if steps[(target := getattr(step, field))].kind != wanted
    ]
    if mismatched:
        raise RecipeError(mismatched)


def resolve_device(recipe: Recipe, host: Host) -> str:
    wanted = recipe.run.device
    if wanted == "cuda" and not host.cuda:
        raise RecipeError("run.device = 'cuda': no CUDA device on this machine; use 'auto' or 'cpu'")
    if wanted == "auto":
        return "cuda" if host.cuda else "cpu"
    return wanted


def compile_plan(
    recipe: Recipe,
    *,
    workdir: str,
    host: Host,
    external: Mapping[str, list[ExternalFile]],
    executor_versions: Mapping[str, int],
) -> Plan:
    check_references(recipe)
    device = resolve_device(recipe, host)
    builder = _PlanBuilder(executor_versions)
    seed = recipe.run.seed
    deps = {name: [getattr(step, f) for f in REFERENCES[step.kind]] for name, step in recipe.steps.items()}
    for name in run_order(deps):
        step = recipe.steps[name]
        where = f"steps.{name}"
        if step.kind == "data":
            weighted = any(source.weight is not None for source in step.sources)
            spec = DataSpec(
                sources=step.sources, ops=step.ops, split=step.split, on_bad_record=step.on_bad_record,
                batch_mb=step.batch_mb, mix_seed=seed if weighted else None,
            )
            builder.add(name, "data", spec, {}, external=external.get(name, []))
        elif step.kind == "tokenizer":
            spec = TokenizerSpec(
                type=step.type, vocab_size=step.vocab_size, min_frequency=step.min_frequency, eot_token=step.eot_token
            )
            builder.add(name, "tokenizer", spec, {"data": step.data})
        elif step.kind == "pretrain":
            tokenizer = recipe.steps[step.tokenizer]
            tokens = builder.tokenized(step.data, step.tokenizer, tokenizer)
            try:
                spec = derive.pretrain_spec(step, tokenizer, device, host, seed, recipe.run.nproc)
            except derive.DerivationError as problem:
                raise RecipeError(f"{where}: {problem}") from None
            builder.add(
                name, "pretrain", spec, {"tokens": tokens, "tokenizer": step.tokenizer},
                derived=derive.pretrain_summary(spec),
            )
        elif step.kind == "evaluate":
            trained = recipe.steps[step.model]
            tokens = builder.tokenized(trained.data, trained.tokenizer, recipe.steps[trained.tokenizer])
            spec = EvaluateSpec(
                suites=evaluate_suites(step), batch_size=step.batch_size, worst=step.worst,
                bootstrap=step.bootstrap, device=device, seed=seed,
            )
            builder.add(
                name, "evaluate", spec, {"model": step.model, "tokens": tokens, "tokenizer": trained.tokenizer},
                external=external.get(name, []),
            )
        elif step.kind == "export":
            spec = ExportSpec(format=step.format, opset=step.opset, tolerance=step.tolerance, quantize=step.quantize)
            builder.add(name, "export", spec, {"model": step.model})
    return Plan(name=recipe.run.name, seed=seed, workdir=workdir, device=device, steps=builder.steps)


def evaluate_suites(step: EvaluateStep) -> dict[str, SuiteConfig]:
    """The step's named suites with each data path cut to its file name: the file's content digest, not
    where it lies on this machine, is what enters the fingerprint (see llmrecipe/evals/locate.py)."""
    suites = {}
    for name, suite in step.named_suites().items():
        field = SUITES_WITH_DATA.get(suite.type)
        value = getattr(suite, field) if field else None
        suites[name] = suite if value is None else suite.model_copy(update={field: posixpath.basename(value)})
    return suites


class _PlanBuilder:
    """Collects plan steps in run order and fingerprints each one from its inputs' fingerprints."""

    def __init__(self, executor_versions: Mapping[str, int]):
        self.versions = executor_versions
        self.steps: list[PlanStep] = []
        self.fingerprints: dict[str, str] = {}

    def add(
        self,
        name: str,
        kind: str,
        spec: Spec,
        inputs: dict[str, str],
        *,
        derived: dict | None = None,
        external: list[ExternalFile] = (),
        implicit: bool = False,
    ) -> None:
        version = self.versions[kind]
        spec_json = spec.model_dump(mode="json")
        fingerprinted = {k: v for k, v in spec_json.items() if k not in spec.NOT_FINGERPRINTED}
        fp = fingerprint(
            kind,
            version,
            fingerprinted,
            {role: self.fingerprints[upstream] for role, upstream in inputs.items()},
            [(f.source, f.name, f.sha256) for f in external],
        )
        self.fingerprints[name] = fp
        self.steps.append(
            PlanStep(
                name=name, kind=kind, implicit=implicit, inputs=inputs, spec=spec_json, derived=derived or {},
                external=list(external), executor_version=version, fingerprint=fp,
            )
        )

    def tokenized(self, data: str, tokenizer_name: str, tokenizer) -> str:
        """The implicit `tokenize` step for (data, tokenizer), added once however many steps share it."""
        name = f"{data}@{tokenizer_name}"
        if name not in self.fingerprints:
            spec = TokenizeSpec(dtype=derive.token_dtype(tokenizer.vocab_size), eot_token=tokenizer.eot_token)
            self.add(name, "tokenize", spec, {"data": data, "tokenizer": tokenizer_name}, implicit=True)
        return name
