"""The GPT-2 family (Radford et al., 2019): learned positions, LayerNorm, GELU MLP, biases."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import Family
from llmrecipe.models.shape import ModelShape


class GPT2(Family):
    name = "gpt2"
    module_path = "llmrecipe.models.gpt2.model:GPT2"
    lora_targets = ("attn.qkv", "attn.proj")
    decodes = True
    hf_architecture = "GPT2LMHeadModel"
    hf_sequence_classification = "GPT2ForSequenceClassification"

    def parameter_count(self, shape: ModelShape) -> int:
        d = shape.d_model
        attention = 4 * d * d + 4 * d  # q, k, v, o with biases
        mlp = 2 * d * shape.ffn_hidden + shape.ffn_hidden + d
        per_layer = attention + mlp + 4 * d  # two LayerNorms, gain and bias
        positions = shape.seq_len * d
        return shape.n_layer * per_layer + self.embedding_parameters(shape) + positions + 2 * d  # + final LayerNorm

    def lookup_parameters(self, shape: ModelShape) -> int:
        return super().lookup_parameters(shape) + shape.seq_len * shape.d_model  # learned positions: a lookup

    def block_linears(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        d, f = shape.d_model, shape.ffn_hidden
        return {"attn.qkv": (d, 3 * d), "attn.proj": (d, d), "mlp.fc": (d, f), "mlp.proj": (f, d)}

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        return {
            "architectures": [self.hf_architecture], "model_type": "gpt2", "vocab_size": shape.vocab_size,
            "n_positions": shape.seq_len, "n_embd": shape.d_model, "n_layer": shape.n_layer, "n_head": shape.n_head,
            "n_inner": shape.ffn_hidden, "activation_function": "gelu_new",  # GELU, tanh approximation
            "layer_norm_epsilon": shape.norm_eps, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
            "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
        }

    def hf_tensors(self, state: dict[str, Any], shape: ModelShape) -> dict[str, Any]:
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
        if not shape.tie_embeddings:
            renamed["lm_head.weight"] = state["lm_head.weight"]
        return renamed


FAMILY = GPT2()
