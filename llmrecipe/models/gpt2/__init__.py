"""The GPT-2 family (Radford et al., 2019): learned positions, LayerNorm, GELU MLP, biases."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import Family, HfTensor, hf_tensor
from llmrecipe.models.hf_options import expect, required
from llmrecipe.models.shape import ModelShape


class GPT2(Family):
    name = "gpt2"
    module_path = "llmrecipe.models.gpt2.model:GPT2"
    lora_targets = ("attn.qkv", "attn.proj")
    decodes = True
    hf_architecture = "GPT2LMHeadModel"
    hf_sequence_classification = "GPT2ForSequenceClassification"
    hf_model_types = {"gpt2": "GPT2LMHeadModel"}
    hf_base_prefix = "transformer."
    hf_unused = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers saved by old transformers versions

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

    def from_hf_config(self, config: dict[str, Any]) -> ModelShape:
        expect(config, "activation_function", ("gelu_new", "gelu_pytorch_tanh"), "gelu_new")
        expect(config, "scale_attn_weights", (True,), True)
        expect(config, "scale_attn_by_inverse_layer_idx", (False,), False)
        expect(config, "add_cross_attention", (False,), False)
        d_model = required(config, "n_embd")
        return ModelShape(
            arch="gpt2", n_layer=required(config, "n_layer"), n_head=required(config, "n_head"),
            n_kv_head=config["n_head"], d_model=d_model, head_dim=d_model // config["n_head"],
            ffn_hidden=config.get("n_inner") or 4 * d_model, vocab_size=required(config, "vocab_size"),
            seq_len=required(config, "n_positions"), dropout=0.0, rope_theta=10000.0,
            norm_eps=config.get("layer_norm_epsilon", 1e-5), tie_embeddings=config.get("tie_word_embeddings", True),
            hf_model_type="gpt2",
        )

    def hf_layout(self, shape: ModelShape) -> list[HfTensor]:
        d, f = shape.d_model, shape.ffn_hidden
        tensors = [hf_tensor("embed.weight", "transformer.wte.weight", shape.vocab_size, d),
                   hf_tensor("positions.weight", "transformer.wpe.weight", shape.seq_len, d),
                   hf_tensor("norm.weight", "transformer.ln_f.weight", d), hf_tensor("norm.bias", "transformer.ln_f.bias", d)]
        for i in range(shape.n_layer):
            ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
            for norm in ("ln_1", "ln_2"):
                tensors += [hf_tensor(f"{ours}{norm}.{p}", f"{theirs}{norm}.{p}", d) for p in ("weight", "bias")]
            # GPT-2's Conv1D keeps weights as (in, out): the transpose of nn.Linear's (out, in).
            for mine, hf, n_in, n_out in (("attn.qkv", "attn.c_attn", d, 3 * d), ("attn.proj", "attn.c_proj", d, d),
                                          ("mlp.fc", "mlp.c_fc", d, f), ("mlp.proj", "mlp.c_proj", f, d)):
                tensors += [hf_tensor(f"{ours}{mine}.weight", f"{theirs}{hf}.weight", n_in, n_out, transposed=True),
                            hf_tensor(f"{ours}{mine}.bias", f"{theirs}{hf}.bias", n_out)]
        if not shape.tie_embeddings:
            tensors.append(hf_tensor("lm_head.weight", "lm_head.weight", shape.vocab_size, d))
        return tensors


FAMILY = GPT2()
