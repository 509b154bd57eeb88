"""`llmrecipe generate`: artifact folders and recipe steps, streaming output, chat templates, clear errors."""

from __future__ import annotations

import io

import pytest

from llmrecipe import api
from llmrecipe.cli import build_parser, main
from llmrecipe.generate.cli import generate_to
from llmrecipe.generate.sampling import SamplingParams
from tests.conftest import write_tiny_recipe
from tests.generate_helpers import lively_model, save_artifact, tiny_shape

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_artifact(lively_model(tiny_shape(vocab_size=320, seq_len=64)), tmp_path_factory.mktemp("model") / "base")


def test_generate_from_a_folder_is_seeded_and_greedy_matches_the_engine(folder, capsys):
    args = ["generate", str(folder), "--prompt", "The quick", "--max-tokens", "8", "--seed", "1"]
    assert main(args) == 0 and main(args) == 0
    first, second = capsys.readouterr().out.split("\n")[:2]
    assert first == second and first

    assert main(["generate", str(folder), "--prompt", "To be", "--prompt", "A stitch", "--temperature", "0",
                 "--max-tokens", "6"]) == 0
    out = capsys.readouterr().out
    model = api.open_model(folder)
    expected = model.engine.generate([model.engine.encode("A stitch")], SamplingParams(max_tokens=6, temperature=0))
    assert f"--- 2: 'A stitch' (length)\n{expected[0].text}\n" in out


def test_a_seeded_batch_samples_each_row_with_its_own_seed(folder, capsys):
    args = ["generate", str(folder), "--prompt", "The quick", "--prompt", "The quick", "--max-tokens", "12",
            "--seed", "1", "--temperature", "1.5"]
    assert main(args) == 0
    first = capsys.readouterr().out
    samples = first.split("--- 2:")
    assert samples[0].split("\n", 1)[1] != samples[1].split("\n", 1)[1]  # the same prompt twice: two samples
    assert main(args) == 0 and capsys.readouterr().out == first  # and the batch repeats with the seed
    assert main(["generate", str(folder), "--prompt", "The quick", "--max-tokens", "12", "--seed", "1",
                 "--temperature", "1.5"]) == 0
    assert capsys.readouterr().out.strip() == samples[0].split("\n", 1)[1].strip()  # row 0 samples with the seed


def test_generate_help_says_the_defaults_and_the_steps_it_takes(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 0.8); 0 is greedy" in text
    assert "pretrain, import, finetune (sft, preference, continue or seq2seq) or export step" in text
    assert "seed + i" in text


def test_chat_uses_the_recorded_template_and_refuses_without_one(folder, tmp_path, capsys):
    assert main(["generate", str(folder), "--prompt", "hi", "--chat"]) == 2
    assert "has no chat template" in capsys.readouterr().err

    chat_folder = save_artifact(lively_model(tiny_shape(vocab_size=320, seq_len=64)), tmp_path / "sft", CHAT_TEMPLATE)
    model = api.open_model(chat_folder)
    rendered = model.chat_prompt([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}])
    assert rendered == "<system>be brief\n<user>hi\n<assistant>"
    assert main(["generate", str(chat_folder), "--prompt", "hi", "--chat", "--system", "be brief",
                 "--max-tokens", "4"]) == 0


def test_bad_targets_and_settings_are_one_line_errors(folder, tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path)
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (hf / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    cases = [
        (["generate", str(hf), "--prompt", "x"], "is a Hugging Face export (LlamaForCausalLM)"),
        (["generate", str(tmp_path / "missing"), "--prompt", "x"], "neither a recipe"),
        (["generate", str(recipe), "--prompt", "x"], "name the step whose model to use, one of ['base']"),
        (["generate", str(recipe), "tok", "--prompt", "x"], "a tokenizer step holds no model"),
        (["generate", str(recipe), "bsae", "--prompt", "x"], "did you mean"),
        (["generate", str(recipe), "base", "--prompt", "x"], "has not run with these settings yet"),
        (["generate", str(folder), "--prompt", "x", "--top-p", "0"], "--top-p 0.0: give a value in (0, 1]"),
        (["generate", str(folder), "--prompt", ""], "the prompt is empty"),
        (["generate", str(folder), "--prompt", "x", "--backend", "onnx"], "has no model.onnx"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


@pytest.mark.e2e
@pytest.mark.slow
def test_generate_from_a_recipe_step(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=10)
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()
    assert main(["generate", str(recipe), "base", "--prompt", "The king", "--max-tokens", "5"]) == 0
    assert capsys.readouterr().out.strip()


def test_a_continuation_of_only_the_end_of_text_token_is_explained_not_a_blank_line(folder):
    model = api.open_model(folder)
    first = model.engine.generate([model.engine.encode("The quick")], SamplingParams(max_tokens=1, temperature=0))
    model.engine.eot_id = first[0].token_ids[0]  # the model's first greedy token now ends the text
    note = "(no text: the model ended the continuation with its end-of-text token"
    for prompts, where in ((["The quick"], "err"), (["The quick", "To be"], "out")):
        args = build_parser().parse_args(["generate", str(folder), "--temperature", "0",
                                          *[part for p in prompts for part in ("--prompt", p)]])
        streams = {"out": io.StringIO(), "err": io.StringIO()}
        assert generate_to(streams["out"], model, args, streams["err"]) == 0
        assert note in streams[where].getvalue()
        assert "\n\n" not in streams["out"].getvalue() and streams["out"].getvalue() != "\n"
    assert streams["out"].getvalue().startswith("--- 1: 'The quick' (stop)\n(no text")
