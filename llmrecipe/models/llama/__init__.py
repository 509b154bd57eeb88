"""The LLaMA family: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention; as options (for Mistral and
Qwen checkpoints) q/k/v biases, q/k norms and Llama 3 rotary scaling."""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import Family, HfTensor
from llmrecipe.models.llama import hf
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

    hf_model_types = hf.MODEL_TYPES
    hf_unused = ("rotary_emb.inv_freq",)  # saved by old transformers versions; a function of the config

    def parameter_count(self, shape: ModelShape) -> int:
        d, q, kv = shape.d_model, shape.n_head * shape.head_dim, shape.n_kv_head * shape.head_dim
        attention = d * q + 2 * d * kv + q * d  # q, k, v, o projections
        attention += (q + 2 * kv if shape.qkv_bias else 0) + (2 * shape.head_dim if shape.qk_norm else 0)
        mlp = 3 * d * shape.ffn_hidden  # gate, up, down
        per_layer = attention + mlp + 2 * d  # two RMSNorm gains
        return shape.n_layer * per_layer + self.embedding_parameters(shape) + d  # + final norm

    def block_linears(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        d, f = shape.d_model, shape.ffn_hidden
        q, kv = shape.n_head * shape.head_dim, shape.n_kv_head * shape.head_dim
        return {"attn.q_proj": (d, q), "attn.k_proj": (d, kv), "attn.v_proj": (d, kv), "attn.o_proj": (q, d),
                "mlp.gate_proj": (d, f), "mlp.up_proj": (d, f), "mlp.down_proj": (f, d)}

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        return hf.hf_config(shape)

    def from_hf_config(self, config: dict[str, Any]) -> ModelShape:
        return hf.shape_from_config(config)

    def hf_layout(self, shape: ModelShape) -> list[HfTensor]:
        return hf.layout(shape)


FAMILY = Llama()
