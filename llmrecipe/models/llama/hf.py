"""The LLaMA family in the Hugging Face layout: LLaMA 1-3 (and SmolLM), Mistral, Qwen2/2.5 and Qwen3 are one
architecture with options (q/k/v biases, q/k norms, tied output, Llama 3 rotary scaling). Torch-free."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import CheckpointError, HfTensor, hf_tensor
from llmrecipe.models.hf_options import expect, required, rope_settings
from llmrecipe.models.shape import ModelShape

MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM",
               "qwen3": "Qwen3ForCausalLM"}
"""Hugging Face `model_type` -> the transformers class an export of it writes."""


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    model_type = config["model_type"]
    expect(config, "hidden_act", ("silu",), "silu")
    expect(config, "mlp_bias", (False,), False)
    expect(config, "pretraining_tp", (1,), 1)
    expect(config, "use_sliding_window", (False,), False)
    if model_type == "qwen2":  # Qwen2 always has q/k/v biases (and none on o); it reads no attention_bias
        qkv_bias = True
    else:  # LLaMA's and Qwen3's attention_bias puts a bias on the output projection too: never used by releases
        qkv_bias = expect(config, "attention_bias", (False,), False)
    layer_types = set(config.get("layer_types") or ["full_attention"])
    if layer_types != {"full_attention"}:
        raise CheckpointError(f"config.json: layer_types {sorted(layer_types)} are not supported; supported: "
                              "'full_attention' in every layer")
    theta, scaling = rope_settings(config)
    d_model, n_head = required(config, "hidden_size"), required(config, "num_attention_heads")
    seq_len = required(config, "max_position_embeddings")
    window = config.get("sliding_window") if model_type == "mistral" else None
    if window is not None:  # within the window a sliding-window model attends to every earlier token: exact
        seq_len = min(seq_len, window)
    return ModelShape(
        arch="llama", n_layer=required(config, "num_hidden_layers"), n_head=n_head,
        n_kv_head=config.get("num_key_value_heads") or n_head, d_model=d_model,
        head_dim=config.get("head_dim") or d_model // n_head, ffn_hidden=required(config, "intermediate_size"),
        vocab_size=required(config, "vocab_size"), seq_len=seq_len, dropout=0.0, rope_theta=theta,
        norm_eps=config.get("rms_norm_eps", 1e-6), tie_embeddings=config.get("tie_word_embeddings", False),
        qkv_bias=qkv_bias, qk_norm=model_type == "qwen3", rope_scaling=scaling, hf_model_type=model_type,
    )


def layout(shape: ModelShape) -> list[HfTensor]:
    # Our rotary layout is LlamaForCausalLM's rotate-half one: no permutation of q and k.
    d, e, f, v = shape.d_model, shape.head_dim, shape.ffn_hidden, shape.vocab_size
    q, kv = shape.n_head * e, shape.n_kv_head * e
    tensors = [hf_tensor("embed.weight", "model.embed_tokens.weight", v, d),
               hf_tensor("norm.weight", "model.norm.weight", d)]
    for i in range(shape.n_layer):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        tensors += [
            hf_tensor(ours + "attn_norm.weight", theirs + "input_layernorm.weight", d),
            hf_tensor(ours + "mlp_norm.weight", theirs + "post_attention_layernorm.weight", d),
            hf_tensor(ours + "attn.q_proj.weight", theirs + "self_attn.q_proj.weight", q, d),
            hf_tensor(ours + "attn.k_proj.weight", theirs + "self_attn.k_proj.weight", kv, d),
            hf_tensor(ours + "attn.v_proj.weight", theirs + "self_attn.v_proj.weight", kv, d),
            hf_tensor(ours + "attn.o_proj.weight", theirs + "self_attn.o_proj.weight", d, q),
            hf_tensor(ours + "mlp.gate_proj.weight", theirs + "mlp.gate_proj.weight", f, d),
            hf_tensor(ours + "mlp.up_proj.weight", theirs + "mlp.up_proj.weight", f, d),
            hf_tensor(ours + "mlp.down_proj.weight", theirs + "mlp.down_proj.weight", d, f),
        ]
        if shape.qkv_bias:
            tensors += [hf_tensor(f"{ours}attn.{p}_proj.bias", f"{theirs}self_attn.{p}_proj.bias", n)
                        for p, n in (("q", q), ("k", kv), ("v", kv))]
        if shape.qk_norm:
            tensors += [hf_tensor(f"{ours}attn.{p}_norm.weight", f"{theirs}self_attn.{p}_norm.weight", e)
                        for p in ("q", "k")]
    if not shape.tie_embeddings:
        tensors.append(hf_tensor("lm_head.weight", "lm_head.weight", v, d))
    return tensors


def hf_config(shape: ModelShape) -> dict[str, Any]:
    model_type = shape.hf_model_type or "llama"
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": shape.rope_theta}
    if shape.rope_scaling is not None:
        rope = {**shape.rope_scaling.model_dump(exclude={"type"}), "rope_type": "llama3", "rope_theta": shape.rope_theta}
    config = {
        "architectures": [MODEL_TYPES[model_type]], "model_type": model_type, "vocab_size": shape.vocab_size,
        "hidden_size": shape.d_model, "intermediate_size": shape.ffn_hidden, "num_hidden_layers": shape.n_layer,
        "num_attention_heads": shape.n_head, "num_key_value_heads": shape.n_kv_head, "head_dim": shape.head_dim,
        "max_position_embeddings": shape.seq_len, "rms_norm_eps": shape.norm_eps, "rope_theta": shape.rope_theta,
        "rope_parameters": rope, "hidden_act": "silu", "attention_dropout": 0.0,
        "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
    }
    if model_type in ("llama", "qwen3"):
        config |= {"attention_bias": False, "mlp_bias": False}
    if model_type in ("mistral", "qwen2", "qwen3"):
        config |= {"sliding_window": None, "use_sliding_window": False}
    return config
