"""The BERT family (Devlin et al., 2019): a bidirectional encoder trained by masked-language modelling.

Two layouts: our own pre-norm encoder (GPT-2's blocks without the causal mask), and with `post_norm` the original
BERT layout of Hugging Face's `BertModel` / `BertForMaskedLM`, which imported checkpoints (MiniLM among them) use.
"""

from __future__ import annotations

from typing import Any

from llmrecipe.models.family import HfTensor, hf_tensor
from llmrecipe.models.gpt2 import GPT2
from llmrecipe.models.hf_options import expect, required
from llmrecipe.models.shape import ModelShape


class Bert(GPT2):
    """GPT-2's blocks without the causal mask, and an output bias."""

    name = "bert"
    module_path = "llmrecipe.models.bert.model:Bert"
    objective = "masked_lm"
    causal = False
    decodes = False
    hf_architecture = None
    hf_model_types = {"bert": "BertForMaskedLM"}
    hf_base_prefix = "bert."
    hf_output = "cls.predictions.decoder.weight"
    hf_unused = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias",  # a buffer; the [CLS] pooler
                 "cls.predictions.decoder.bias")  # an alias of cls.predictions.bias

    def parameter_count(self, shape: ModelShape) -> int:
        if not shape.post_norm:
            return super().parameter_count(shape) + shape.vocab_size  # the output layer's bias
        d, f = shape.d_model, shape.ffn_hidden
        embeddings = (shape.vocab_size + shape.seq_len + shape.type_vocab_size) * d + 2 * d
        per_layer = 4 * d * d + 4 * d + 2 * d * f + f + d + 4 * d  # attention, MLP, two LayerNorms
        head = d * d + d + 2 * d + shape.vocab_size if shape.lm_head else 0  # transform, its norm, output bias
        return embeddings + shape.n_layer * per_layer + head

    def lookup_parameters(self, shape: ModelShape) -> int:
        return super().lookup_parameters(shape) + shape.type_vocab_size * shape.d_model

    def hf_export_architecture(self, shape: ModelShape) -> str | None:
        if not shape.post_norm:
            return None
        return "BertForMaskedLM" if shape.lm_head else "BertModel"

    def from_hf_config(self, config: dict[str, Any]) -> ModelShape:
        expect(config, "hidden_act", ("gelu",), "gelu")
        expect(config, "position_embedding_type", ("absolute",), "absolute")
        expect(config, "is_decoder", (False,), False)
        expect(config, "add_cross_attention", (False,), False)
        d_model, n_head = required(config, "hidden_size"), required(config, "num_attention_heads")
        architectures = config.get("architectures") or ["BertForMaskedLM"]
        return ModelShape(
            arch="bert", n_layer=required(config, "num_hidden_layers"), n_head=n_head, n_kv_head=n_head,
            d_model=d_model, head_dim=d_model // n_head, ffn_hidden=required(config, "intermediate_size"),
            vocab_size=required(config, "vocab_size"), seq_len=required(config, "max_position_embeddings"),
            dropout=0.0, rope_theta=10000.0, norm_eps=config.get("layer_norm_eps", 1e-12),
            tie_embeddings=config.get("tie_word_embeddings", True), post_norm=True,
            type_vocab_size=config.get("type_vocab_size", 2), lm_head=architectures[0] != "BertModel",
            hf_model_type="bert",
        )

    def hf_layout(self, shape: ModelShape) -> list[HfTensor]:
        if not shape.post_norm:
            raise NotImplementedError("pre-norm `bert` models have no Hugging Face layout")
        d, f, b = shape.d_model, shape.ffn_hidden, "bert."
        tensors = [hf_tensor("embed.weight", b + "embeddings.word_embeddings.weight", shape.vocab_size, d),
                   hf_tensor("positions.weight", b + "embeddings.position_embeddings.weight", shape.seq_len, d),
                   hf_tensor("token_types.weight", b + "embeddings.token_type_embeddings.weight", shape.type_vocab_size, d),
                   *_norm("embed_norm", b + "embeddings.LayerNorm", d)]
        for i in range(shape.n_layer):
            ours, theirs = f"blocks.{i}.", f"{b}encoder.layer.{i}."
            attention = theirs + "attention."
            tensors += [
                HfTensor(ours + "attn.qkv.weight", tuple(f"{attention}self.{p}.weight" for p in ("query", "key", "value")), (d, d)),
                HfTensor(ours + "attn.qkv.bias", tuple(f"{attention}self.{p}.bias" for p in ("query", "key", "value")), (d,)),
                *_linear(ours + "attn.proj", attention + "output.dense", d, d),
                *_norm(ours + "ln_1", attention + "output.LayerNorm", d),
                *_linear(ours + "mlp.fc", theirs + "intermediate.dense", d, f),
                *_linear(ours + "mlp.proj", theirs + "output.dense", f, d),
                *_norm(ours + "ln_2", theirs + "output.LayerNorm", d),
            ]
        if shape.lm_head:
            tensors += [*_linear("lm_head.transform", "cls.predictions.transform.dense", d, d),
                        *_norm("lm_head.norm", "cls.predictions.transform.LayerNorm", d),
                        hf_tensor("lm_head.decoder.bias", "cls.predictions.bias", shape.vocab_size)]
            if not shape.tie_embeddings:
                tensors.append(hf_tensor("lm_head.decoder.weight", "cls.predictions.decoder.weight", shape.vocab_size, d))
        return tensors

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        return {
            "architectures": [self.hf_export_architecture(shape)], "model_type": "bert", "vocab_size": shape.vocab_size,
            "hidden_size": shape.d_model, "num_hidden_layers": shape.n_layer, "num_attention_heads": shape.n_head,
            "intermediate_size": shape.ffn_hidden, "hidden_act": "gelu", "max_position_embeddings": shape.seq_len,
            "type_vocab_size": shape.type_vocab_size, "layer_norm_eps": shape.norm_eps,
            "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, "position_embedding_type": "absolute",
            "tie_word_embeddings": shape.tie_embeddings, "torch_dtype": "float32",
        }


def _linear(ours: str, theirs: str, n_in: int, n_out: int) -> list[HfTensor]:
    return [hf_tensor(ours + ".weight", theirs + ".weight", n_out, n_in), hf_tensor(ours + ".bias", theirs + ".bias", n_out)]


def _norm(ours: str, theirs: str, d: int) -> list[HfTensor]:
    return [hf_tensor(f"{ours}.{p}", f"{theirs}.{p}", d) for p in ("weight", "bias")]


FAMILY = Bert()
