"""Exports of both decoder styles: ONNX with a KV cache (parity in onnxruntime) and the Hugging Face layout."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llmrecipe.export.onnx import export_decoder
from llmrecipe.export.parity import fused_logit_difference, greedy_tokens, past_logit_difference
from llmrecipe.generate.decoders import OnnxDecoder, TorchDecoder
from llmrecipe.generate.engine import Engine
from llmrecipe.generate.fused import FusedCache, read_weights
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from tests.generate_helpers import STYLES, lively_model, save_artifact, style_shape

ONNX_EXPORTS = [("llama-gqa", 23), ("gpt2", 23), ("gpt2", 18)]
"""Few ONNX exports keep the suite fast (the MHA path is the GQA path without the repeat): each style at the default
opset 23 (fused attention and norms), and one at 18 (attention spelled out). Heads of 16, the smallest size
onnxruntime's GroupQueryAttention takes: the opset-23 exports also decode with the fused graph (generate/fused.py,
which reads opset-23 graphs), and the parity checks cover both graphs."""
FUSED_HEADS = {
    "llama": {"n_head": 2, "n_kv_head": 1, "head_dim": 16},
    "gpt2": {"n_head": 2, "n_kv_head": 2, "head_dim": 16},
}


def export_shape(style: str):
    shape = style_shape(style)
    return shape.model_copy(update=FUSED_HEADS[shape.arch])


@pytest.fixture(scope="module", params=ONNX_EXPORTS, ids=[f"{s}-opset{o}" for s, o in ONNX_EXPORTS])
def exported(request, tmp_path_factory):
    style, opset = request.param
    model = lively_model(export_shape(style))
    path = tmp_path_factory.mktemp(style) / "model.onnx"
    written = export_decoder(model, path, opset=opset)
    return model, path, written


def test_onnx_graph_has_named_dynamic_axes_and_a_cache_per_layer(exported):
    import onnx

    model, path, written = exported
    assert written == [path]
    graph = onnx.load(str(path)).graph
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in [*graph.input, *graph.output]}
    heads, size = model.shape.n_kv_head, model.shape.head_dim
    past = {f"past_key_values.{i}.{side}": ["batch", heads, "past", size] for i in (0, 1) for side in ("key", "value")}
    present = {f"present.{i}.{side}": ["batch", heads, "past + seq", size] for i in (0, 1) for side in ("key", "value")}
    assert model.shape.n_layer == 2 and dims == {
        "input_ids": ["batch", "seq"], "position_ids": ["batch", "seq"], "attention_mask": ["batch", "past + seq"],
        **past, "logits": ["batch", "seq", model.shape.vocab_size], **present,
    }
    assert [i.name for i in graph.input][3:5] == ["past_key_values.0.key", "past_key_values.0.value"]


def test_onnx_logits_and_caches_match_torch_with_and_without_a_past(exported):
    model, path, _ = exported
    assert past_logit_difference(model, path) < 1e-4


def test_onnx_greedy_decoding_gives_torch_tokens(exported):
    model, path, _ = exported
    expected, actual = greedy_tokens(model, path)
    assert actual == expected and len({tuple(t) for t in expected}) == 3


def test_onnx_engine_decodes_one_token_at_a_time_like_full_recomputation(exported):
    model, path, _ = exported
    engine = Engine(OnnxDecoder(path, model.shape))
    (completion,) = engine.generate([[3, 1, 4]], SamplingParams(max_tokens=10, temperature=0.0))
    ids = [3, 1, 4]
    with torch.no_grad():
        for _ in range(10):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert completion.token_ids == ids[3:]


def at_opset_23(path) -> bool:
    import onnx

    (opset,) = [o.version for o in onnx.load(str(path), load_external_data=False).opset_import if o.domain == ""]
    return opset >= 23


def test_unpadded_batches_decode_with_the_fused_graph_and_padded_ones_with_the_portable(exported):
    model, path, _ = exported
    decoder = OnnxDecoder(path, model.shape)
    assert (decoder.fused_session is not None) == isinstance(decoder.empty(2, 8), FusedCache) == at_opset_23(path)
    # Rows of one length, one finishing early (the cache drops its row), then a padded batch (portable caches).
    prompts, settings = [[3, 1, 4], [1, 5, 9]], [SamplingParams(max_tokens=n, temperature=0.0) for n in (4, 9)]
    padded = [[2, 7], [1, 8, 2, 8]]
    ours, torch_engine = Engine(decoder), Engine(TorchDecoder(model))
    assert [c.token_ids for c in ours.generate(prompts, settings)] == [
        c.token_ids for c in torch_engine.generate(prompts, settings)]
    assert (decoder._session is None) == at_opset_23(path)  # the portable session waits for a padded batch
    assert [c.token_ids for c in ours.generate(padded, settings)] == [
        c.token_ids for c in torch_engine.generate(padded, settings)]
    assert fused_logit_difference(model, path) < 1e-4


def test_an_export_the_fused_graph_cannot_serve_decodes_with_the_portable_graph(exported):
    import onnx

    model, path, _ = exported
    proto = onnx.load(str(path))
    assert (read_weights(proto, model.shape) is not None) == at_opset_23(path)
    assert read_weights(proto, model.shape.model_copy(update={"head_dim": 8, "n_head": 4})) is None
    assert read_weights(proto, model.shape.model_copy(update={"n_layer": 3})) is None  # not this graph's shape
    portable = OnnxDecoder(path, model.shape, fused=False)
    assert portable.fused_session is None and isinstance(portable.empty(1), list)
    params = SamplingParams(max_tokens=6, temperature=0.0)
    expected = Engine(TorchDecoder(model)).generate([[3, 1, 4]], params)[0].token_ids
    assert Engine(portable).generate([[3, 1, 4]], params)[0].token_ids == expected


def test_where_onnxruntime_has_a_gpu_every_batch_decodes_with_the_portable_graph_there(exported, monkeypatch):
    import llmrecipe.export.onnx

    model, path, _ = exported
    with_a_gpu = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(llmrecipe.export.onnx, "onnx_providers", lambda: with_a_gpu)
    decoder = OnnxDecoder(path, model.shape)
    assert decoder.fused_session is None and isinstance(decoder.empty(1), list)


@pytest.mark.parametrize("style", STYLES)
def test_hugging_face_folder_loads_offline_and_matches_our_logits(style, tmp_path, monkeypatch):
    transformers = pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from llmrecipe.export.hf import hf_logit_difference, write_hf_folder

    model = lively_model(style_shape(style, vocab_size=320, seq_len=24, tie=style != "llama-gqa"))
    source = save_artifact(model, tmp_path / "model", chat_template="{{ messages[0]['content'] }}")
    out = tmp_path / "hf"
    out.mkdir()
    write_hf_folder(model, source, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [{"gpt2": "GPT2LMHeadModel"}.get(style.split("-")[0], "LlamaForCausalLM")]
    assert hf_logit_difference(model, out) < 1e-4

    theirs = transformers.AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    from tokenizers import Tokenizer

    ours = Tokenizer.from_file(str(source / "tokenizer.json"))
    assert tokenizer("To be, or not").input_ids == ours.encode("To be, or not").ids
    assert tokenizer.eos_token == "<|endoftext|>" and tokenizer.chat_template == "{{ messages[0]['content'] }}"
    prompt = torch.tensor([[5, 9, 2]])
    generated = theirs.generate(prompt, max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(prompt),
                                eos_token_id=None, pad_token_id=0)
    mine = Engine(TorchDecoder(model))
    assert generated[0, 3:].tolist() == mine.generate([[5, 9, 2]], SamplingParams(max_tokens=8, temperature=0))[0].token_ids


def step_context(inputs, out_dir):
    out_dir.mkdir(parents=True)
    return StepContext(name="under_test", inputs=inputs, out_dir=out_dir, scratch_dir=out_dir.parent / "scratch",
                       device="cpu", reporter=LineReporter())


def test_export_step_writes_the_hugging_face_layout(tmp_path):
    pytest.importorskip("transformers")
    from llmrecipe.steps import export

    source = save_artifact(lively_model(style_shape("gpt2", vocab_size=320, seq_len=24)), tmp_path / "model")
    metrics = export.run({"format": "hf", "opset": 18, "tolerance": 1e-4},
                         step_context({"model": source}, tmp_path / "hf"))
    assert metrics["max_abs_diff"] < 1e-4 and metrics["format"] == "hf"
    assert (tmp_path / "hf" / "generation_config.json").is_file()


@pytest.mark.e2e
@pytest.mark.slow
def test_export_step_quantizes_to_int8_and_reports_size_and_perplexity(tmp_path):
    from llmrecipe.steps import export

    source = save_artifact(lively_model(style_shape("gpt2", vocab_size=320, seq_len=24)), tmp_path / "model")
    out = tmp_path / "onnx"
    metrics = export.run({"format": "onnx", "opset": 23, "tolerance": 1e-4, "quantize": "int8"},
                         step_context({"model": source}, out))
    assert metrics["greedy_tokens_match"] and metrics["int8_onnx_bytes"] == (out / "model.int8.onnx").stat().st_size
    assert metrics["int8_onnx_bytes"] < metrics["onnx_bytes"]
    assert np.isfinite(metrics["int8_sample_ppl"]) and abs(metrics["int8_ppl_change"]) < 0.05
