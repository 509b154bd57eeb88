"""Suites on tiny random models: multiple choice against a hand-computed ranking, batch-size independence,
every suite through the executor, a random model at chance on Social IQa, and `compare` verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe.compare import compare_folders
from llmrecipe.evals.loglikelihood import cut_requests, encode_pair, score_requests
from llmrecipe.evals.perplexity import document_scores, target_nats
from llmrecipe.recipe.evaluate import EvaluateStep
from llmrecipe.tokenizer.bytes import load_tokenizer
from tests.conftest import SHARED_DATA
from tests.test_evaluate_export import DOCUMENTS, artifacts, save_model_folder, step_context, tiny_model  # noqa: F401

MC_ROWS = [  # short enough that context and choice fit the tiny model's 16-token window
    {"context": "The quick fox", "choices": ["jumps.", "is blue", "sings"], "answer": 0},
    {"context": "To be,", "choices": ["or not", "maybe"], "answer": 0},
    {"context": "Rain ", "choices": ["in Spain", "falls", "x"], "answer": 1},
    {"context": "", "choices": ["All that", "is gold"], "answer": 1},
]


@pytest.fixture(scope="module")
def tokenizer(artifacts):  # noqa: F811
    return load_tokenizer(artifacts["tokenizer"])


def hand_log_likelihood(model, tokenizer, context: str, continuation: str, eot_id: int) -> float:
    """One sequence at a time, no padding: sum of log P(continuation token | everything before it)."""
    if not context:
        context_ids, whole = [eot_id], [eot_id] + tokenizer.encode(continuation).ids
    else:
        context_ids, whole = tokenizer.encode(context.rstrip()).ids, tokenizer.encode(context + continuation).ids
    assert len(whole) <= model.shape.seq_len + 1, "keep hand-scored examples inside one window"
    with torch.no_grad():
        log_probs = torch.log_softmax(model(torch.tensor([whole[:-1]]))[0].float(), dim=-1)  # (T, V)
    return sum(log_probs[position - 1, whole[position]].item() for position in range(len(context_ids), len(whole)))


def test_multiple_choice_accuracy_matches_a_hand_computed_ranking(artifacts, tokenizer, tmp_path):  # noqa: F811
    tok, meta = tokenizer
    model = tiny_model(2, vocab_size=320)
    predicted, predicted_norm = [], []
    for row in MC_ROWS:
        scores = [hand_log_likelihood(model, tok, row["context"], " " + c, meta["eot_id"]) for c in row["choices"]]
        predicted.append(int(np.argmax(scores)))
        predicted_norm.append(int(np.argmax(np.array(scores) / [len(c) for c in row["choices"]])))
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MC_ROWS))
    metrics, out = run_suites(artifacts, tmp_path / "out", {"mc": {"type": "multiple_choice", "data": "mc.jsonl"}}, [data])
    assert metrics["mc_accuracy"] == pytest.approx(np.mean([p == r["answer"] for p, r in zip(predicted, MC_ROWS)]))
    assert metrics["mc_accuracy_norm"] == pytest.approx(np.mean([p == r["answer"] for p, r in zip(predicted_norm, MC_ROWS)]))
    rows = [json.loads(line) for line in (out / "examples" / "mc.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in rows] == predicted and [r["prediction_norm"] for r in rows] == predicted_norm
    assert metrics["mc_chance"] == pytest.approx(np.mean([1 / len(r["choices"]) for r in MC_ROWS]))
    assert (out / "mc.png").read_bytes()[:4] == b"\x89PNG"


def test_trailing_whitespace_moves_to_the_continuation_as_in_the_harness(tokenizer):
    tok, meta = tokenizer
    assert encode_pair(tok, "Rain in Spain ", " falls", meta["eot_id"]) == encode_pair(tok, "Rain in Spain", "  falls", meta["eot_id"])
    assert encode_pair(tok, "", "falls", meta["eot_id"]).context_ids == [meta["eot_id"]]


def test_scores_do_not_depend_on_the_batch_size(tokenizer):
    tok, meta = tokenizer
    model = tiny_model(2, vocab_size=320)
    requests = [encode_pair(tok, row["context"], " " + c, meta["eot_id"]) for row in MC_ROWS for c in row["choices"]]
    requests.append(encode_pair(tok, "The quick brown fox " * 5, "jumps over the lazy dog", meta["eot_id"]))  # > seq_len
    assert cut_requests(requests, model.shape.seq_len) == 1  # the last one loses the start of its context
    by_size = [score_requests(model, requests, size)[0] for size in (1, 3, 64)]
    for scores in by_size[1:]:
        np.testing.assert_allclose(scores, by_size[0], rtol=1e-5)
    stream = np.array(tok.encode("The quick brown fox jumps over the lazy dog. " * 6).ids + [meta["eot_id"]] * 2)
    nats = [target_nats(model, stream, 16, size) for size in (1, 2, 64)]
    for each in nats[1:]:
        np.testing.assert_allclose(each, nats[0], rtol=1e-5)


def test_document_scores_split_the_stream_at_end_of_text():
    tokens = np.array([5, 6, 0, 7, 0, 8, 9])  # eot = 0: documents [5 6 0] [7 0] [8 9]
    nats = np.arange(1.0, 7.0)  # targets 6 0 7 0 8 9
    scores = document_scores(tokens, nats, np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 2]), eot_id=0)
    assert scores.nats.tolist() == [1 + 2, 3 + 4, 5 + 6] and scores.tokens.tolist() == [2, 2, 2]
    assert scores.byte_nats.tolist() == [1, 3, 11] and scores.bytes.tolist() == [1, 1, 3]
    assert scores.first_token.tolist() == [0, 3, 5]


def test_every_suite_runs_through_the_executor(artifacts, tmp_path):  # noqa: F811
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"prompt": f"Is {w} a fox?", "response": "Yes. It is." if i % 2 else "No. Not."}) + "\n"
                          for i, w in enumerate(["the cat", "a dog", "Rain", "the quick brown fox " * 8])))
    text = tmp_path / "text.txt"
    text.write_text("To be, or not to be.\n\nThat is the question.\n")
    suites = {
        "val": {"type": "perplexity", "split": "val"},
        "file": {"type": "perplexity", "file": "text.txt"},
        "gen": {"type": "generation", "data": "qa.jsonl", "decoding": {"max_new_tokens": 4}},
        "qa": {"type": "qa_factuality", "data": "qa.jsonl", "decoding": {"max_new_tokens": 3}},
    }
    metrics, out = run_suites(artifacts, tmp_path / "out", suites, [None, text, qa, qa])
    assert metrics["file_tokens"] > 0 and metrics["val_loss"] > 0 and metrics["file_documents"] == 2
    assert 0 <= metrics["gen_bleu"] <= 100 and 0 <= metrics["gen_f1"] <= 1
    shares = metrics["qa_accuracy"] + metrics["qa_hallucination_rate"] + metrics["qa_abstention_rate"]
    assert shares == pytest.approx(1.0)
    # the tiny model's context is 16 tokens: the long question is cut in both suites (qa's template adds words)
    assert 1 <= metrics["gen_prompts_cut"] <= metrics["qa_prompts_cut"] <= 4
    results = json.loads((out / "results.json").read_text())["suites"]
    assert len(results["val"]["worst"]) <= 2 and set(results["gen"]["intervals"]) >= {"bleu", "chrf", "rouge_l"}


def run_suites(artifacts, out: Path, suites: dict, files: list[Path | None], batch_size: int = 3):  # noqa: F811
    """The evaluate executor on `suites` (tables as in a recipe); files[i] is suite i's data file."""
    from llmrecipe.plan.plan import ExternalFile
    from llmrecipe.steps import evaluate

    step = EvaluateStep.model_validate({"kind": "evaluate", "model": "m", "suites": suites})
    spec = {"suites": {n: s.model_dump(mode="json") for n, s in step.named_suites().items()}, "batch_size": batch_size,
            "worst": 2, "bootstrap": 200, "device": "cpu", "seed": 7}
    ctx = step_context(artifacts, out)
    ctx.external = [ExternalFile(source=i, name=p.name, sha256="", size=0, path=str(p)) for i, p in enumerate(files) if p]
    return evaluate.run(spec, ctx), out


@pytest.mark.skipif(not (SHARED_DATA / "mc" / "social_iqa.jsonl").is_file(), reason="needs ../shared/data")
def test_a_random_model_is_at_chance_on_social_iqa(artifacts, tmp_path):  # noqa: F811
    data = SHARED_DATA / "mc" / "social_iqa.jsonl"
    suites = {"siqa": {"type": "multiple_choice", "data": str(data), "limit": 300}}
    metrics, out = run_suites(artifacts, tmp_path / "out", suites, [data], batch_size=64)
    low, high = json.loads((out / "results.json").read_text())["suites"]["siqa"]["intervals"]["accuracy"]
    assert low <= metrics["siqa_chance"] <= high
    # accuracy_norm of this random model was above chance on the first 600 (0.373 [0.340, 0.412]): dividing by
    # characters favours answers with more characters per token, which correlates with the label in this set.
    assert abs(metrics["siqa_chance"] - 1 / 3) < 0.01


def test_compare_two_models_and_the_same_model(artifacts, tmp_path):  # noqa: F811
    data = tmp_path / "mc.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in MC_ROWS * 5))
    text = tmp_path / "text.txt"  # 12 documents: enough for a paired verdict
    text.write_text("\n\n".join(DOCUMENTS[:12]) + "\n")
    suites = {"val": {"type": "perplexity", "file": "text.txt"}, "mc": {"type": "multiple_choice", "data": "mc.jsonl"}}
    run_suites(artifacts, tmp_path / "a", suites, [text, data])
    run_suites(artifacts, tmp_path / "a_again", suites, [text, data], batch_size=1)
    same = compare_folders(tmp_path / "a", tmp_path / "a_again", resamples=200)
    assert {row["verdict"] for row in same} == {"no significant difference"}
    assert {(row["suite"], row["metric"]) for row in same} >= {("val", "loss"), ("val", "bpb"), ("mc", "accuracy")}

    overconfident = tiny_model(2, vocab_size=320)
    with torch.no_grad():
        overconfident.lm_head.weight.mul_(30.0)  # tied: sharp, wrong predictions, a far higher loss than A's
    worse = dict(artifacts, model=save_model_folder(overconfident, tmp_path / "worse_model"))
    run_suites(worse, tmp_path / "b", suites, [text, data])
    rows = {(r["suite"], r["metric"]): r for r in compare_folders(tmp_path / "a", tmp_path / "b", resamples=200)}
    assert rows[("val", "loss")]["b"] > rows[("val", "loss")]["a"] + 1.0
    assert rows[("val", "loss")]["verdict"] == rows[("val", "bpb")]["verdict"] == "A better"
    assert rows[("val", "loss")]["high"] < 0
    reversed_rows = compare_folders(tmp_path / "b", tmp_path / "a", resamples=200)
    assert next(r for r in reversed_rows if r["metric"] == "loss")["verdict"] == "B better"
