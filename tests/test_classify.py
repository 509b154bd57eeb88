"""Classification fine-tuning (issue 5) and the classification suite (issue 6): labels checked before training,
pooling, class weighting, exact resume, metrics against hand computations, a whole recipe with its report."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.errors import StepError
from llmrecipe.classification import expected_calibration_error
from llmrecipe.evals.classification_suite import METRICS, metric_columns
from llmrecipe.evals.stats import value
from llmrecipe.finetune.classify_data import Fields, class_weights, encode, held_out, label_set, read_splits
from llmrecipe.generate.artifact import ArtifactError, load_model
from llmrecipe.models.build import build_model
from llmrecipe.models.classifier import Classifier, load_classifier, pad_right
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.finetune.classify import adapt, run_classify
from llmrecipe.steps.finetune.model_io import write_model
from llmrecipe.steps.training import train_config
from llmrecipe.tokenizer.train import train_char
from llmrecipe.training.checkpoint import latest_checkpoint, model_tensors
from llmrecipe.training.distributed import World
from llmrecipe.training.tasks.classify import ClassifyTask, LabelledRows
from llmrecipe.training.trainer import Trainer
from tests.conftest import REPO, SUBJECTS, VERBS, write_tiny_recipe
from tests.test_training import Crash, CrashingReporter


def labelled_rows(count: int, seed: int = 0, flipped: tuple[int, ...] = ()) -> list[dict]:
    """Sentences about the castle are `castle`, about the sea `sea` (one word tells them apart); `flipped` rows
    carry the wrong label."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        place = "castle" if i % 2 else "sea"
        label = ("sea" if place == "castle" else "castle") if i in flipped else place
        rows.append({"text": f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} the {place}.", "label": label})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


SHAPE = ModelShape(arch="llama", n_layer=1, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                   vocab_size=320, seq_len=32, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)


def make_spec(**overrides) -> FinetuneSpec:
    fields = dict(
        task="classify", init_model=SHAPE, model=SHAPE, dataset={"path": "d.jsonl"}, dataset_file=None,
        chat_template=None, special_tokens=[], end_of_turn=None, seq_len=32, labels=None, class_weighting="none",
        pooling="last", lora=None, optim={"lr": 1e-2, "warmup": 2}, batch_size=8, micro_batch_size=4, grad_accum=2,
        tokens_per_step=256, total_steps=30, epochs=None, eval_every=8, eval_batches=4, early_stopping_patience=None,
        checkpoint_every=10, log_every=4, device="cpu", precision="fp32", compile=False, seed=3,
    )
    return FinetuneSpec.model_validate({**fields, **overrides})


@pytest.fixture(scope="module")
def tokenizer():
    texts = [row["text"] for row in labelled_rows(40)]
    return train_char(iter(texts), vocab_size=300, min_frequency=1, eot_token="<|endoftext|>")


def encoded_split(tokenizer, rows: list[dict], labels: list[str], pooling: str = "last") -> LabelledRows:
    eot = tokenizer.token_to_id("<|endoftext|>")
    ids, _ = encode(tokenizer, [row["text"] for row in rows], SHAPE.seq_len, eot, pooling)
    return LabelledRows(ids, torch.tensor([labels.index(row["label"]) for row in rows]))


# ---- data and labels -----------------------------------------------------------------------------------------------


def test_texts_longer_than_the_context_keep_their_beginning_and_are_counted(tokenizer):
    eot = tokenizer.token_to_id("<|endoftext|>")
    rows, cut = encode(tokenizer, ["a sea", "the sea " * 40, "sea"], 8, eot, "last")
    assert cut == [False, True, False] and [len(r) for r in rows][1] == 8 and rows[1][-1] == eot
    assert rows[1][:7] == tokenizer.encode("the sea " * 40).ids[:7]


def test_labels_that_do_not_match_the_recipe_are_named():
    rows = [type("E", (), {"label": label})() for label in ("pos", "neg", "meh")]
    with pytest.raises(StepError, match=r"labels \['meh'\] that `labels` does not list.*no training row has the listed labels \['neutral'\]"):
        label_set(rows, [], ["neg", "pos", "neutral"])
    assert label_set(rows[:2], [], None) == ["neg", "pos"]
    with pytest.raises(StepError, match=r"\['meh'\] occur in held-out rows but never in training rows"):
        label_set(rows[:2], rows[2:], None)


def test_a_missing_field_names_the_field_and_the_file(tmp_path):
    path = write_jsonl(tmp_path / "reviews.jsonl", [{"text": "fine", "label": "pos"}, {"review": "bad", "label": "neg"}])
    with pytest.raises(StepError, match=r"reviews.jsonl line 2: no usable 'text' field \(dataset.text_field = 'text'\)"):
        read_splits(path, Fields(), 0.1)
    with pytest.raises(StepError, match=r"line 1: no usable 'sentiment' field \(dataset.label_field"):
        read_splits(path, Fields(label="sentiment"), 0.1)


def test_splits_follow_the_split_field_and_hold_out_a_stable_share_of_train_rows(tmp_path):
    rows = [{**row, "split": "test" if i % 5 == 0 else "train"} for i, row in enumerate(labelled_rows(200))]
    splits = read_splits(write_jsonl(tmp_path / "d.jsonl", rows), Fields(), 0.2)
    assert len(splits["test"]) == 40 and 0 < len(splits["val"]) < 160
    assert {e.line for e in splits["test"]} == {i + 1 for i in range(0, 200, 5)}
    again = read_splits(write_jsonl(tmp_path / "e.jsonl", list(reversed(rows))), Fields(), 0.2)
    assert sorted(e.text for e in again["val"]) == sorted(e.text for e in splits["val"])  # a function of the text


def test_a_test_only_file_reads_for_evaluation_and_a_bad_split_value_is_named(tmp_path):
    rows = [{**row, "split": "test"} for row in labelled_rows(10)]
    assert len(read_splits(write_jsonl(tmp_path / "t.jsonl", rows), Fields(), 0.2)["test"]) == 10
    with pytest.raises(StepError, match=r"line 1: 'split' = \['train'\] is not one of"):
        read_splits(write_jsonl(tmp_path / "b.jsonl", [{**rows[0], "split": ["train"]}]), Fields(), 0.2)


def test_a_label_mismatch_fails_the_step_before_training(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "d.jsonl", labelled_rows(20))
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "meta.json").write_text(json.dumps({"type": "char", "vocab_size": 300, "eot_id": 0}))
    ctx = StepContext(name="ft", inputs={"model": tmp_path / "no-model-needed", "tokenizer": tmp_path / "tok"},
                      out_dir=tmp_path / "out", scratch_dir=tmp_path / "scratch", device="cpu", reporter=LineReporter())
    with pytest.raises(StepError, match=r"labels \['sea'\] that `labels` does not list.*\['river'\]"):
        run_classify(make_spec(dataset_file=str(data), labels=["castle", "river"]), ctx, World())
    assert not (tmp_path / "scratch").exists()  # nothing trained, nothing checkpointed


# ---- the model -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
def test_padding_does_not_change_a_rows_logits(arch):
    shape = SHAPE.model_copy(update={"arch": arch})
    torch.manual_seed(0)
    model = Classifier(build_model(shape), ["a", "b", "c"], "first" if arch == "bert" else "last").eval()
    short, long = [5, 9, 11], [7, 3, 8, 2, 6, 4, 1]
    alone = model(torch.tensor([short]), torch.tensor([3]))  # (1, C)
    padded = torch.tensor([short + [99] * 4, long])  # the short row padded with junk on the right
    together = model(padded, torch.tensor([3, 7]))  # (2, C)
    torch.testing.assert_close(together[0], alone[0], atol=1e-5, rtol=1e-5)


def test_last_token_pooling_reads_the_last_real_token():
    torch.manual_seed(0)
    model = Classifier(build_model(SHAPE), ["a", "b"], "last").eval()
    row = torch.tensor([[5, 9, 11, 0, 0]])
    base = model(row, torch.tensor([3]))
    assert not torch.allclose(model(torch.tensor([[5, 9, 12, 0, 0]]), torch.tensor([3])), base)  # last real token
    hidden = model.backbone(row)  # (1, T, D)
    torch.testing.assert_close(base, model.score(hidden[:, 2]))


# ---- training --------------------------------------------------------------------------------------------------------


def test_balanced_class_weights_and_the_weighted_loss_whatever_the_micro_batching(tokenizer):
    labels = torch.tensor([0, 0, 0, 1])
    torch.testing.assert_close(class_weights(labels, 2, "balanced"), torch.tensor([4 / 6, 2.0]))
    assert class_weights(labels, 2, "none") is None
    rows = labelled_rows(8)
    train = encoded_split(tokenizer, rows, ["castle", "sea"])
    weights = torch.tensor([0.5, 3.0])
    losses = []
    for micro in (8, 4, 1):
        torch.manual_seed(0)
        model = Classifier(build_model(SHAPE), ["castle", "sea"], "last")
        task = ClassifyTask(train, None, 2, weights, seed=0, batch_size=8, eval_batches=1, micro_batch_size=micro)
        batch = task.train_batch(0, range(8), micro)  # one epoch of the 8 rows, in micro-batches
        objective = task.objective(model)
        with torch.no_grad():
            losses.append(float(sum(objective(**m)["loss"] for m in batch.micro_batches)) / batch.normalizer)
    torch.manual_seed(0)
    model = Classifier(build_model(SHAPE), ["castle", "sea"], "last")
    ids, lengths = pad_right(train.rows)
    expected = torch.nn.functional.cross_entropy(model(ids, lengths), train.labels, weight=weights).item()  # sum w ce / sum w
    assert losses == pytest.approx([expected] * 3, rel=1e-5)


def train_tiny(tmp_path: Path, name: str, tokenizer, reporter=None, **overrides):
    rows = labelled_rows(64)
    labels = ["castle", "sea"]
    train, val = encoded_split(tokenizer, rows[:48], labels), encoded_split(tokenizer, rows[48:], labels)
    spec = make_spec(**overrides)
    torch.manual_seed(spec.seed)
    model = Classifier(build_model(SHAPE), labels, "last")
    adapt(model, spec.lora)
    ctx = StepContext(name=name, inputs={}, out_dir=tmp_path / name / "out", scratch_dir=tmp_path / name / "scratch",
                      device="cpu", reporter=reporter or LineReporter())
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    task = ClassifyTask(train, val, len(labels), None, spec.seed, spec.batch_size, spec.eval_batches,
                        spec.micro_batch_size)
    return model, Trainer(model, task, train_config(spec, family(SHAPE.arch)), ctx).fit()


@pytest.mark.e2e
def test_training_learns_a_separable_set_and_resumes_byte_identically(tmp_path, tokenizer):
    reference, summary = train_tiny(tmp_path, "straight", tokenizer)
    assert summary["val_accuracy"] >= 0.9 and summary["val_macro_f1"] >= 0.9  # chance is 0.5
    assert (tmp_path / "straight" / "scratch" / "best" / "model.safetensors").is_file()
    with pytest.raises(Crash):
        train_tiny(tmp_path, "crashy", tokenizer, CrashingReporter(after=13))
    assert latest_checkpoint(tmp_path / "crashy" / "scratch" / "checkpoints").name == "step-00000010"
    resumed, again = train_tiny(tmp_path, "crashy", tokenizer)
    as_bytes = lambda m: {k: v.numpy().tobytes() for k, v in model_tensors(m).items()}  # noqa: E731
    assert as_bytes(resumed) == as_bytes(reference)
    assert again["val_loss"] == summary["val_loss"]


def test_early_stopping_on_validation_loss(tmp_path, tokenizer):
    _, summary = train_tiny(tmp_path, "stop", tokenizer, optim={"lr": 0.3, "warmup": 0}, eval_every=1,
                            early_stopping_patience=1, total_steps=40)
    assert summary["stopped_early"] and summary["steps"] < 40


@pytest.mark.parametrize("merge", [True, False])
def test_lora_trains_adapters_and_the_head_and_the_artifact_loads_to_the_same_logits(tmp_path, tokenizer, merge):
    lora = {"rank": 2, "alpha": 4.0, "targets": ["q_proj", "v_proj"], "merge": merge}
    model, summary = train_tiny(tmp_path, "lora", tokenizer, lora=lora, total_steps=6, eval_every=3)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.endswith(("lora_A", "lora_B"))} | {"score.weight"}  # no bias: a decoder
    assert any(n.endswith("lora_A") for n in trainable)
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "meta.json").write_text("{}")
    ctx = StepContext(name="lora", inputs={"tokenizer": tmp_path / "tok"}, out_dir=tmp_path / "out",
                      scratch_dir=tmp_path / "lora" / "scratch", device="cpu", reporter=LineReporter())
    ctx.out_dir.mkdir()
    write_model(model_tensors(model), make_spec(lora=lora), ctx.out_dir, ctx.scratch_dir / "best" / "model.safetensors",
                json.dumps(model.config()))
    assert (ctx.out_dir / "adapter.safetensors").is_file() and (ctx.out_dir / "best" / "model.safetensors").is_file()
    loaded = load_classifier(ctx.out_dir)
    ids, lengths = pad_right([[5, 9, 11, 0], [7, 3]])
    torch.testing.assert_close(loaded(ids, lengths), model.eval()(ids, lengths), atol=1e-5, rtol=1e-5)


# ---- the classification suite's metrics ------------------------------------------------------------------------------


def test_suite_metrics_equal_hand_computed_values():
    # labels    0    0    1    1    2    2
    # predicted 0    1    1    1    0    2   -> correct: 1 0 1 1 0 1
    probabilities = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1],
                              [0.2, 0.5, 0.3], [0.9, 0.05, 0.05], [0.1, 0.3, 0.6]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    columns = metric_columns(probabilities, labels, 3)
    # class 0: tp 1, predicted 2, actual 2 -> P 1/2, R 1/2, F1 1/2
    # class 1: tp 2, predicted 3, actual 2 -> P 2/3, R 1, F1 0.8
    # class 2: tp 1, predicted 1, actual 2 -> P 1, R 1/2, F1 2/3
    assert value(METRICS["accuracy"], columns) == pytest.approx(4 / 6)
    assert value(METRICS["macro_precision"], columns) == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert value(METRICS["macro_recall"], columns) == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert value(METRICS["macro_f1"], columns) == pytest.approx((1 / 2 + 0.8 + 2 / 3) / 3)
    assert value(METRICS["micro_f1"], columns) == pytest.approx(4 / 6)
    # confidences 0.7 0.6 0.8 0.5 0.9 0.6 in 15 bins: (0.6, 0.8] ... each bin |correct - confidence| by hand
    confidence, correct = probabilities.max(axis=1), np.array([1, 0, 1, 1, 0, 1])
    hand = (abs(1 - 0.7) + abs(0 + 1 - 0.6 - 0.6) + abs(1 - 0.8) + abs(1 - 0.5) + abs(0 - 0.9)) / 6
    assert value(METRICS["ece"], columns) == pytest.approx(hand)
    assert value(METRICS["ece"], columns) == pytest.approx(expected_calibration_error(confidence, correct))


# ---- a whole recipe: pretrain -> classify -> evaluate, with its report ------------------------------------------------


CLASSIFY = """
[steps.clf]
kind = "finetune"
init = "base"
task = "classify"
optim = {{ lr = 5e-3, warmup = 2 }}
budget = {{ epochs = 4 }}
batch_size = 8
eval_every = 5
{labels}

[steps.clf.dataset]
path = "labelled.jsonl"
val_fraction = 0.2

[steps.clf_eval]
kind = "evaluate"
model = "clf"
worst = 3

[steps.clf_eval.suites.held]
type = "classification"
data = "labelled.jsonl"
split = "test"
review = 3
"""


def classify_recipe(tmp_path: Path, labels: str = "") -> Path:
    rows = labelled_rows(100, flipped=(3, 10, 81, 86))  # two noisy training rows, two noisy test rows
    rows = [{**row, "split": "test" if i >= 80 else "train"} for i, row in enumerate(rows)]
    write_jsonl(tmp_path / "labelled.jsonl", rows)
    return write_tiny_recipe(tmp_path, steps=20, extra=CLASSIFY.format(labels=labels))


@pytest.mark.e2e
def test_classify_recipe_learns_and_its_report_shows_the_confusion_matrix_and_worst_examples(tmp_path, capsys):
    recipe = classify_recipe(tmp_path)
    assert main(["run", str(recipe)]) == 0
    plan = api.compile(api.load(recipe))
    folder = api.artifact(plan, "clf")
    config = json.loads((folder / "config.json").read_text())
    assert (config["task"], config["labels"], config["pooling"]) == ("classify", ["castle", "sea"], "last")
    for name in ("model.safetensors", "tokenizer.json", "meta.json", "metrics.jsonl", "loss.png", "best/model.safetensors"):
        assert (folder / name).is_file(), name
    with pytest.raises(ArtifactError, match="is a classifier"):  # `generate` refuses it with a message
        load_model(folder)
    results = json.loads((api.artifact(plan, "clf_eval") / "results.json").read_text())["suites"]["held"]
    assert results["metrics"]["accuracy"] >= 0.9  # 18 of the 20 test rows carry the label their word says
    assert {row["line"] for row in results["worst"]} >= {82, 87}  # the flipped test rows are the confident mistakes
    review = results["tables"]["training rows the model confidently contradicts (check their labels)"]
    rows = [json.loads(line) for line in (tmp_path / "labelled.jsonl").read_text().splitlines()]
    flipped_train = {i + 1 for i in (3, 10) if not held_out(rows[i]["text"], 0.2)}  # those not held out for validation
    assert flipped_train and {row["line"] for row in review} >= flipped_train  # listed for review as likely mislabelled
    # the suite holds out its own validation share (val_fraction 0.1) from the rows marked train
    train_texts = {row["text"] for row in rows[:80] if not held_out(row["text"], 0.1)}
    in_train = [i + 1 for i, row in enumerate(rows[80:], start=80) if row["text"] in train_texts]
    assert in_train and results["extra"]["rows_also_in_train"] == len(in_train)  # 128 possible texts, 100 rows
    listed = results["tables"]["scored rows whose exact text is also a training row (they flatter the scores)"]
    assert [row["line"] for row in listed] == in_train[:20]
    assert all(row["in_train"] == (row["line"] in in_train) for row in results["worst"])

    capsys.readouterr()
    assert main(["status", str(recipe), "--json"]) == 0
    report = Path(json.loads(capsys.readouterr().out)["report"])
    markdown = report.read_text()
    assert "held_confusion.png" in markdown and "Worst examples:" in markdown
    assert "Per class:" in markdown and "| class | precision | recall | f1 | support |" in markdown
    assert "Training rows the model confidently contradicts (check their labels):" in markdown
    assert "| macro_f1 |" in markdown and "rows_also_in_train" in markdown
    image = next(line[line.index("(") + 1 : -1] for line in markdown.splitlines() if "held_confusion.png" in line)
    assert (report.parent / image).read_bytes()[:4] == b"\x89PNG"


def test_classify_recipe_with_mismatched_labels_fails_before_anything_runs(tmp_path, capsys):
    recipe = classify_recipe(tmp_path, labels='labels = ["castle", "river"]')
    assert main(["run", str(recipe)]) == 2  # a sample of the file shows it: no step runs, not even pre-training
    err = capsys.readouterr().err
    assert "steps.clf.dataset.path: the data has labels ['sea'] that `labels` does not list" in err
    assert "['castle', 'river']" in err
    assert not list(tmp_path.rglob("manifest.json"))


def test_suites_that_do_not_fit_a_classifier_are_recipe_errors(tmp_path, capsys):
    recipe = classify_recipe(tmp_path)
    extra = ["--set", "steps.clf_eval.suites.ppl.type=\"perplexity\"", "--set", "steps.clf_eval.suites.ppl.split=\"val\""]
    assert main(["validate", str(recipe), *extra]) == 2
    assert "steps.clf_eval.suites.ppl: a perplexity suite scores a language model" in capsys.readouterr().err
    assert main(["validate", str(recipe), "--set", "steps.clf_eval.model=\"base\""]) == 2
    assert "a classification suite needs a classifier, but 'base' is a language model" in capsys.readouterr().err


def test_sentiment_recipe_compiles():
    plan = api.compile(api.load(REPO / "recipes" / "sentiment.toml"))
    assert plan.step("sentiment").spec["task"] == "classify"
    assert plan.step("eval").spec["suites"]["test"]["type"] == "classification"
