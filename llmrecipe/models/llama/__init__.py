"""The LLaMA family: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no biases."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import Family
from llmrecipe.models.shape import ModelShape


class Llama(Family):
    name = "llama"
    module_path = "llmrecipe.models.llama.model:Llama"
    grouped_query = True
    even_head_dim = True
    ffn_mult = 8 / 3  # SwiGLU's three matrices at 8/3 hold the parameters of a 4x GELU MLP
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj")
    decodes = True
    hf_architecture = "LlamaForCausalLM"
    hf_sequence_classification = "LlamaForSequenceClassification"

    def parameter_count(self, shape: ModelShape) -> int:
        d, kv = shape.d_model, shape.n_kv_head * shape.head_dim
        attention = d * d + 2 * d * kv + d * d  # q, k, v, o projections, no biases
        mlp = 3 * d * shape.ffn_hidden  # gate, up, down
        per_layer = attention + mlp + 2 * d  # two RMSNorm gains
        return shape.n_layer * per_layer + self.embedding_parameters(shape) + d  # + final norm

    def block_linears(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        d, f, kv = shape.d_model, shape.ffn_hidden, shape.n_kv_head * shape.head_dim
        return {"attn.q_proj": (d, d), "attn.k_proj": (d, kv), "attn.v_proj": (d, kv), "attn.o_proj": (d, d),
                "mlp.gate_proj": (d, f), "mlp.up_proj": (d, f), "mlp.down_proj": (f, d)}

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        return {
            "architectures": [self.hf_architecture], "model_type": "llama", "vocab_size": shape.vocab_size,
            "hidden_size": shape.d_model, "intermediate_size": shape.ffn_hidden, "num_hidden_layers": shape.n_layer,
            "num_attention_heads": shape.n_head, "num_key_value_heads": shape.n_kv_head, "head_dim": shape.head_dim,
            "max_position_embeddings": shape.seq_len, "rms_norm_eps": shape.norm_eps, "rope_theta": shape.rope_theta,
            "hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
            "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
        }

    def hf_tensors(self, state: dict[str, Any], shape: ModelShape) -> dict[str, Any]:
        # Our rotary layout is LlamaForCausalLM's rotate-half one: no permutation of q and k.
        renamed = {"model.embed_tokens.weight": state["embed.weight"], "model.norm.weight": state["norm.weight"]}
        for i in range(shape.n_layer):
            ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
            renamed[theirs + "input_layernorm.weight"] = state[ours + "attn_norm.weight"]
            renamed[theirs + "post_attention_layernorm.weight"] = state[ours + "mlp_norm.weight"]
            for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
                renamed[f"{theirs}self_attn.{proj}.weight"] = state[f"{ours}attn.{proj}.weight"]
            for proj in ("gate_proj", "up_proj", "down_proj"):
                renamed[f"{theirs}mlp.{proj}.weight"] = state[f"{ours}mlp.{proj}.weight"]
        if not shape.tie_embeddings:
            renamed["lm_head.weight"] = state["lm_head.weight"]
        return renamed


FAMILY = Llama()
