"""A classifier you can use: `llmrecipe predict` (JSONL in, labels and probabilities out) and `/v1/classify` in
`serve`, on a small classify artifact; both give the probabilities the evaluation computes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import save_file

from llmrecipe.cli import main
from llmrecipe.finetune.classify_data import encode
from llmrecipe.models.build import build_model
from llmrecipe.models.classifier import Classifier, load_classifier, predict_probabilities
from llmrecipe.models.shape import ModelShape
from llmrecipe.predict import TextClassifier
from llmrecipe.serve.app import ServeSettings
from llmrecipe.serve.encoders import create_classifier_app, create_embeddings_app
from llmrecipe.serve.server import background_app
from llmrecipe.tokenizer.train import train_char
from llmrecipe.training.checkpoint import model_tensors
from tests.conftest import SUBJECTS, VERBS

LABELS = ["castle", "sea", "storm"]


def classifier_artifact(folder: Path, arch: str = "llama", pooling: str = "last") -> Path:
    """A classify artifact as the finetune step writes one: config.json, model.safetensors, tokenizer, meta."""
    texts = [f"{s} {v} the castle and the sea" for s in SUBJECTS for v in VERBS]
    tokenizer = train_char(iter(texts), vocab_size=300, min_frequency=1, eot_token="<|endoftext|>")
    shape = ModelShape(arch=arch, n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                       vocab_size=320, seq_len=64, dropout=0.0, rope_theta=10000.0, tie_embeddings=arch != "bert")
    torch.manual_seed(0)
    model = Classifier(build_model(shape), LABELS, pooling, max_seq_len=48)
    with torch.no_grad():
        model.score.weight.normal_(0, 1.0)  # a head with opinions: probabilities far from uniform
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(model.config()))
    save_file(model_tensors(model), str(folder / "model.safetensors"))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "meta.json").write_text(json.dumps({"type": "char", "vocab_size": 300,
                                                  "eot_id": tokenizer.token_to_id("<|endoftext|>")}))
    return folder


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return classifier_artifact(tmp_path_factory.mktemp("clf") / "clf")


TEXTS = ["The king walks toward the castle", "a soldier weeps for the sea", "the storm " * 30]


def expected(folder: Path) -> torch.Tensor:
    """What the evaluation computes: the suite's encoding and batching."""
    model = load_classifier(folder)
    classifier = TextClassifier(folder)
    rows, _ = encode(classifier.tokenizer, TEXTS, model.max_seq_len, classifier.marker, model.pooling)
    return predict_probabilities(model, rows, 8, "cpu")


def test_predict_writes_each_row_with_its_label_and_probabilities(artifact, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"id": i, "review": text}) + "\n" for i, text in enumerate(TEXTS)))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(artifact), "--input", str(source), "--text-field", "review", "--output", str(out)]) == 0
    assert "predicted 3 rows over the labels ['castle', 'sea', 'storm']; 1 longer than the context" in capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    reference = expected(artifact)
    for row, probabilities in zip(rows, reference):
        prediction = row["prediction"]
        assert list(prediction["probabilities"]) == LABELS
        assert [prediction["probabilities"][label] for label in LABELS] == pytest.approx(probabilities.tolist(), abs=1e-6)
        assert prediction["label"] == LABELS[int(probabilities.argmax())]
        assert prediction["confidence"] == pytest.approx(float(probabilities.max()), abs=1e-6)
    assert [row["id"] for row in rows] == [0, 1, 2] and [r["prediction"]["text_cut"] for r in rows] == [False, False, True]


def test_predict_mistakes_are_one_line_errors(artifact, tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"review": "the sea"}) + "\n")
    assert main(["predict", str(artifact), "--input", str(source)]) == 2
    assert "in.jsonl line 1: no string field 'text'" in capsys.readouterr().err
    language_model = tmp_path / "lm"
    language_model.mkdir()
    (language_model / "config.json").write_text(json.dumps({"arch": "llama"}))
    assert main(["predict", str(language_model), "--input", str(source)]) == 2
    assert "is not a classifier" in capsys.readouterr().err


def test_v1_classify_answers_with_the_same_probabilities(artifact):
    app = create_classifier_app(TextClassifier(artifact), ServeSettings(model_name="clf", api_key="secret"))
    reference = expected(artifact)
    with background_app(app) as url:
        headers = {"Authorization": "Bearer secret"}
        answer = httpx.post(f"{url}/v1/classify", json={"model": "clf", "input": TEXTS}, headers=headers).json()
        one = httpx.post(f"{url}/v1/classify", json={"model": "clf", "input": TEXTS[0]}, headers=headers).json()
        wrong = httpx.post(f"{url}/v1/classify", json={"model": "other", "input": "x"}, headers=headers)
        unauthorised = httpx.post(f"{url}/v1/classify", json={"model": "clf", "input": "x"})
        assert "llmrecipe_requests_total{path=\"/v1/classify\",status=\"200\"}" in httpx.get(f"{url}/metrics",
                                                                                          headers=headers).text
    assert [r["index"] for r in answer["data"]] == [0, 1, 2] and answer["model"] == "clf"
    for result, probabilities in zip(answer["data"], reference):
        assert [result["probabilities"][label] for label in LABELS] == pytest.approx(probabilities.tolist(), abs=1e-6)
        assert result["label"] == LABELS[int(probabilities.argmax())]
    assert answer["data"][2]["text_cut"] is True and one["data"][0] == {**answer["data"][0], "index": 0}
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    assert unauthorised.status_code == 401


# ---- exports -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,pooling", [("llama", "last"), ("gpt2", "last"), ("bert", "first")])
def test_the_onnx_export_of_a_classifier_gives_torchs_class_logits(tmp_path, arch, pooling):
    pytest.importorskip("onnxruntime")
    from llmrecipe.export.classifier import export_classifier

    folder = classifier_artifact(tmp_path / "clf", arch, pooling)
    out = tmp_path / "onnx"
    out.mkdir()
    metrics = export_classifier(load_classifier(folder), folder, out, "onnx", 18, 1e-4, print)
    assert metrics["max_abs_diff"] <= 1e-4 and (out / "model.onnx").is_file() and (out / "config.json").is_file()


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_hugging_face_export_of_a_classifier_loads_as_sequence_classification(tmp_path, arch):
    pytest.importorskip("transformers")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from llmrecipe.export.classifier import export_classifier

    folder = classifier_artifact(tmp_path / "clf", arch)
    out = tmp_path / "hf"
    out.mkdir()
    metrics = export_classifier(load_classifier(folder), folder, out, "hf", 18, 1e-4, print)
    assert metrics["max_abs_diff"] <= 1e-4
    model = AutoModelForSequenceClassification.from_pretrained(str(out), local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert type(model).__name__ == f"{'Llama' if arch == 'llama' else 'GPT2'}ForSequenceClassification"
    assert model.config.id2label == dict(enumerate(LABELS))
    with torch.no_grad():
        logits = model(**tokenizer(TEXTS[:2], padding=True, return_tensors="pt")).logits
    assert torch.softmax(logits, -1).numpy() == pytest.approx(expected(folder)[:2].numpy(), abs=1e-5)


def test_a_bert_classifier_is_refused_by_the_hugging_face_export_with_the_reason(tmp_path):
    from llmrecipe.errors import StepError
    from llmrecipe.export.classifier import export_classifier

    folder = classifier_artifact(tmp_path / "clf", "bert", "first")
    with pytest.raises(StepError, match="no exact Hugging Face counterpart .* format = \"onnx\" exports it"):
        export_classifier(load_classifier(folder), folder, tmp_path, "hf", 18, 1e-4, print)


def test_a_recipe_may_export_its_classifier_but_not_quantize_it(tmp_path, capsys):
    from tests.test_classify import classify_recipe

    recipe = classify_recipe(tmp_path)
    with open(recipe, "a") as f:
        f.write('\n[steps.clf_onnx]\nkind = "export"\nmodel = "clf"\nformat = "onnx"\n')
    assert main(["validate", str(recipe)]) == 0, capsys.readouterr().err
    assert main(["validate", str(recipe), "--set", "steps.clf_onnx.quantize=\"int8\""]) == 2
    assert "int8 quantization is for decoders" in capsys.readouterr().err


# ---- embeddings of an encoder ----------------------------------------------------------------------------------------


def encoder_artifact(folder: Path) -> Path:
    texts = [f"{s} {v} the castle and the sea" for s in SUBJECTS for v in VERBS]
    tokenizer = train_char(iter(texts), vocab_size=300, min_frequency=1, eot_token="<|endoftext|>")
    shape = ModelShape(arch="bert", n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                       vocab_size=320, seq_len=40, dropout=0.0, rope_theta=10000.0, tie_embeddings=False)
    torch.manual_seed(0)
    folder.mkdir(parents=True)
    save_file(model_tensors(build_model(shape)), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(shape.model_dump_json())
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def test_v1_embeddings_of_an_encoder_are_unit_mean_states_whatever_the_batch(tmp_path):
    from llmrecipe.embed import TextEncoder
    from llmrecipe.models.build import load_trained
    from llmrecipe.models.classifier import is_encoder_artifact

    folder = encoder_artifact(tmp_path / "bert")
    assert is_encoder_artifact(folder)
    app = create_embeddings_app(TextEncoder.load(folder), ServeSettings(model_name="enc"))
    texts = ["the king walks", "a soldier weeps for the sea tonight", "the storm " * 10]
    with background_app(app) as url:
        batch = httpx.post(f"{url}/v1/embeddings", json={"model": "enc", "input": texts}).json()
        alone = httpx.post(f"{url}/v1/embeddings", json={"model": "enc", "input": texts[0]}).json()
        empty = httpx.post(f"{url}/v1/embeddings", json={"model": "enc", "input": ""})
    vectors = torch.tensor([row["embedding"] for row in batch["data"]])  # (3, D)
    assert vectors.shape == (3, 32) and torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(torch.tensor(alone["data"][0]["embedding"]), vectors[0], atol=1e-5)  # padding changes nothing
    assert [row["text_cut"] for row in batch["data"]] == [False, False, True]  # 100 characters, context 40
    model, _ = load_trained(folder)
    model.lm_head = torch.nn.Identity()
    ids = torch.tensor([TextEncoder.load(folder).tokenizer.encode(texts[1]).ids])
    with torch.no_grad():
        mean = model(ids)[0].mean(0)
    assert torch.allclose(vectors[1], mean / mean.norm(), atol=1e-5)
    assert batch["usage"]["prompt_tokens"] == len("the king walks") + len(texts[1]) + 40
    assert empty.status_code == 400 and "no tokens" in empty.json()["error"]["message"]


def test_only_text_embedding_encoders_are_served_as_readers(tmp_path):
    """`serve` sends bert artifacts to /v1/embeddings; a t5 (bidirectional encoder, but a generator) and a causal
    model go to the generating server."""
    from llmrecipe.models.classifier import is_encoder_artifact

    for arch, reads in (("bert", True), ("t5", False), ("llama", False)):
        folder = tmp_path / arch
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"arch": arch}))
        assert is_encoder_artifact(folder) is reads, arch
