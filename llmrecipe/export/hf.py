"""The Hugging Face transformers layout: config.json, model.safetensors, tokenizer files, generation_config.json.

LLaMA style -> `LlamaForCausalLM` (our rotary layout is already its rotate-half one, so no permutation);
GPT-2 style -> `GPT2LMHeadModel` (its Conv1D layers store weights transposed). Tied output weights are left
out of the file, as transformers expects. When transformers is installed the folder is loaded back with
`from_pretrained` and its logits compared with ours.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from llmrecipe.errors import StepError
from llmrecipe.generate.artifact import end_of_text_id, end_of_turn_id
from llmrecipe.generate.chat import find_chat_template


def llama_config(shape) -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": shape.vocab_size,
        "hidden_size": shape.d_model, "intermediate_size": shape.ffn_hidden, "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head, "num_key_value_heads": shape.n_kv_head, "head_dim": shape.head_dim,
        "max_position_embeddings": shape.seq_len, "rms_norm_eps": shape.norm_eps, "rope_theta": shape.rope_theta,
        "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
    }


def llama_tensors(state: dict[str, torch.Tensor], shape) -> dict[str, torch.Tensor]:
    renamed = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
    for i in range(shape.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        renamed[theirs + "input_layernorm.weight"] = state[ours + "attn_norm.weight"]
        renamed[theirs + "post_attention_layernorm.weight"] = state[ours + "mlp_norm.weight"]
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            renamed[f"{theirs}self_attn.{proj}.weight"] = state[f"{ours}attn.{proj}.weight"]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            renamed[f"{theirs}mlp.{proj}.weight"] = state[f"{ours}mlp.{proj}.weight"]
    return renamed


def gpt2_config(shape) -> dict[str, Any]:
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": shape.vocab_size,
        "n_positions": shape.seq_len, "n_embd": shape.d_model, "n_layer": shape.n_layer, "n_head": shape.n_head,
        "n_inner": shape.ffn_hidden, "activation_function": "gelu_new",  # GELU, tanh approximation
        "layer_norm_epsilon": shape.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
    }


def gpt2_tensors(state: dict[str, torch.Tensor], shape) -> dict[str, torch.Tensor]:
    renamed = {
        "transformer.wte.weight": state["embed.weight"], "transformer.wpe.weight": state["positions.weight"],
        "transformer.ln_f.weight": state["norm.weight"], "transformer.ln_f.bias": state["norm.bias"],
    }
    for i in range(shape.n_layer):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        for norm in ("ln_1", "ln_2"):
            renamed[f"{theirs}{norm}.weight"] = state[f"{ours}{norm}.weight"]
            renamed[f"{theirs}{norm}.bias"] = state[f"{ours}{norm}.bias"]
        # GPT-2's Conv1D keeps weights as (in, out): the transpose of nn.Linear's (out, in).
        for mine, hf in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"), ("mlp.fc", "mlp.c_fc"),
                         ("mlp.proj", "mlp.c_proj")):
            renamed[f"{theirs}{hf}.weight"] = state[f"{ours}{mine}.weight"].t()
            renamed[f"{theirs}{hf}.bias"] = state[f"{ours}{mine}.bias"]
    return renamed


LAYOUTS = {"llama": (llama_config, llama_tensors), "gpt2": (gpt2_config, gpt2_tensors)}
"""Architecture -> (transformers config, our state dict -> transformers tensor names)."""


def write_hf_folder(model: torch.nn.Module, model_dir: Path, out_dir: Path) -> None:
    shape = model.shape
    if shape.arch not in LAYOUTS:
        raise StepError(f"a `{shape.arch}` model has no Hugging Face export here; export {sorted(LAYOUTS)} models")
    make_config, rename = LAYOUTS[shape.arch]
    state = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    tensors = rename(state, shape)
    if not shape.tie_embeddings:
        tensors["lm_head.weight"] = state["lm_head.weight"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    eot_id = end_of_text_id(tokenizer)
    eot = tokenizer.id_to_token(eot_id) if eot_id is not None else None
    stop_id = end_of_turn_id(model_dir, tokenizer) or eot_id  # a chat model stops at the end of its turn
    stop = tokenizer.id_to_token(stop_id) if stop_id is not None else None
    ids = {"bos_token_id": eot_id, "eos_token_id": stop_id}
    (out_dir / "config.json").write_text(json.dumps({**make_config(shape), **ids}, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps({**ids, "max_length": shape.seq_len}, indent=2))
    shutil.copy(model_dir / "tokenizer.json", out_dir / "tokenizer.json")
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": shape.seq_len,
                        "bos_token": eot, "eos_token": stop, "clean_up_tokenization_spaces": False}
    template = find_chat_template(model_dir)
    if template is not None:
        tokenizer_config["chat_template"] = template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": stop}, indent=2))


@torch.no_grad()
def hf_logit_difference(model: torch.nn.Module, folder: Path, seed: int = 0) -> float:
    """Largest |transformers - ours| logit difference on random ids, the folder loaded offline."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar for loading a few tensors is noise in the step log
    theirs = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch, length in ((1, 3), (2, model.shape.seq_len)):
        ids = torch.randint(0, model.shape.vocab_size, (batch, length), generator=generator)
        difference = (theirs(ids).logits - model(ids)).abs().max()
        largest = max(largest, float(difference))
    return largest


def export_hf(model: torch.nn.Module, model_dir: Path, out_dir: Path, tolerance: float,
              log: Callable[[str], None]) -> dict[str, Any]:
    write_hf_folder(model, model_dir, out_dir)
    metrics: dict[str, Any] = {"format": "hf", "safetensors_bytes": (out_dir / "model.safetensors").stat().st_size}
    try:
        import transformers  # noqa: F401  (only to check the export; not needed to write it)
    except ImportError:
        log("transformers is not installed: the folder was written but not loaded back to compare logits")
        return metrics
    difference = hf_logit_difference(model, out_dir)
    log(f"transformers vs torch: max |logit difference| = {difference:.3g} (tolerance {tolerance:g})")
    if not difference <= tolerance:
        raise StepError(f"transformers' logits differ from ours by up to {difference:.3g}, more than tolerance = "
                        f"{tolerance:g}; this is a bug in the Hugging Face export of `{model.shape.arch}` models")
    return metrics | {"max_abs_diff": difference}
