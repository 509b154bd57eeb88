"""The T5 family in its v1.1 form (Raffel et al., 2020): an encoder-decoder with pre-norm RMSNorm and no biases,
relative position buckets shared by the layers of each stack, a gated-GELU MLP and untied input and output
embeddings. It pre-trains by span corruption and fine-tunes text-to-text."""

from __future__ import annotations

from typing import Any

from llmrecipe.checkpoints.headers import token_id
from llmrecipe.models.family import Family, HfTensor, ModelSettings, ShapeError, hf_tensor, round_up
from llmrecipe.models.hf_options import expect, required
from llmrecipe.models.shape import ModelShape

POSITION_BUCKETS = 32
"""Relative-position buckets per stack (T5's default): exact distances up to 8 (each way), log-spaced beyond."""
MAX_DISTANCE = 128
"""Distances from this on share the last bucket."""
NORM_EPS = 1e-6
TRAINED_INPUT_LENGTH = 512
"""The input length T5 was pre-trained on: the context an imported T5 model is planned with."""


def noise_counts(tokens: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(corrupted tokens, corrupted spans) of an example of `tokens` tokens: at least one of each, and at least one
    token kept."""
    noise = min(max(int(round(tokens * noise_density)), 1), tokens - 1)
    return noise, max(1, int(round(noise / mean_span_length)))


def span_corruption_lengths(inputs_length: int, noise_density: float, mean_span_length: float) -> tuple[int, int]:
    """(raw tokens per example, target length) so that an example of that many raw tokens corrupts into exactly
    `inputs_length` encoder tokens and the target length given, with no padding: the `compute_input_and_target_lengths`
    arithmetic of the T5 codebase. Inputs hold the kept tokens, one sentinel per span and end-of-text; targets one
    sentinel per span, the corrupted tokens and end-of-text."""

    def lengths(tokens: int) -> tuple[int, int]:
        noise, spans = noise_counts(tokens, noise_density, mean_span_length)
        return tokens - noise + spans + 1, noise + spans + 1

    tokens = inputs_length
    while lengths(tokens + 1)[0] <= inputs_length:
        tokens += 1
    return tokens, lengths(tokens)[1]


def sentinel_token(index: int) -> str:
    """The name of sentinel `index` (T5's vocabulary names them so; `<extra_id_0>` has the highest id)."""
    return f"<extra_id_{index}>"


class T5(Family):
    name = "t5"
    module_path = "llmrecipe.models.t5.model:T5"
    objective = "span_corruption"
    encoder_decoder = True
    decodes = True
    causal = False  # the encoder sees both sides: no packed SFT or left-to-right scoring of one stack
    hidden_states = False  # two stacks (encoder, decoder), neither of them `blocks`
    ffn_mult = 8 / 3  # gated GELU's three matrices at 8/3 hold the parameters of a 4x GELU MLP
    hf_architecture = "T5ForConditionalGeneration"
    hf_auto_class = "AutoModelForSeq2SeqLM"
    hf_model_types = {"t5": "T5ForConditionalGeneration"}
    # Copies of `shared` a checkpoint may carry beside it, and the cross-attention bucket table old transformers
    # versions saved though no layer reads it.
    hf_unused = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
                 "EncDecAttention.relative_attention_bias.weight")
    onnx_layout = "seq2seq"

    def shape(self, settings: ModelSettings, vocab_size: int) -> ModelShape:
        m = settings
        if m.n_kv_head is not None:
            raise ShapeError("model.n_kv_head: grouped-query attention is not part of `t5`; remove it")
        if m.tie_embeddings and "tie_embeddings" in getattr(m, "model_fields_set", ()):
            raise ShapeError("model.tie_embeddings = true: T5 v1.1 keeps its input and output embeddings apart; "
                             "remove the setting")
        base = super().shape(m, vocab_size + m.sentinels)  # rows for the sentinels after the tokenizer's ids
        tokens, target_len = span_corruption_lengths(m.seq_len, m.noise_density, m.mean_span_length)
        if tokens <= m.seq_len // 2 or target_len < 3:
            raise ShapeError(f"model.seq_len = {m.seq_len} is too short for span corruption at noise_density = "
                             f"{m.noise_density}; raise seq_len")
        return base.model_copy(update={
            "n_layer": m.n_encoder_layer or m.n_layer, "n_decoder_layer": m.n_decoder_layer or m.n_layer,
            "target_len": target_len, "sentinels": m.sentinels, "noise_density": m.noise_density,
            "mean_span_length": m.mean_span_length, "tie_embeddings": False, "norm_eps": NORM_EPS,
        })

    def derived(self, shape: ModelShape) -> dict[str, Any]:
        tokens, _ = span_corruption_lengths(shape.seq_len, shape.noise_density, shape.mean_span_length)
        return {"n_encoder_layer": shape.n_layer, "n_decoder_layer": shape.n_decoder_layer,
                "span_example_tokens": tokens, "target_len": shape.target_len, "sentinels": shape.sentinels}

    def parameter_count(self, shape: ModelShape) -> int:
        d, f, buckets = shape.d_model, shape.ffn_hidden, POSITION_BUCKETS * shape.n_head
        attention = 4 * d * shape.n_head * shape.head_dim  # q, k, v, o; no biases (heads x head_dim may differ from d)
        mlp = 3 * d * f  # two input matrices (gate, up), one output
        encoder = shape.n_layer * (attention + mlp + 2 * d) + buckets + d  # two norms per block; final norm
        decoder = shape.n_decoder_layer * (2 * attention + mlp + 3 * d) + buckets + d  # + cross-attention
        return encoder + decoder + 2 * shape.vocab_size * d  # input embedding and output projection

    def flops_per_token(self, shape: ModelShape) -> int:
        """Training FLOPs per encoder input token: 6 per matmul parameter of the encoder per input token and of the
        decoder (and output layer) per target token, plus the attention scores (12·L·heads·head_dim·keys per
        query), all per input token (a step's tokens are counted on the encoder's side)."""
        d, f, T, S = shape.d_model, shape.ffn_hidden, shape.target_len or shape.seq_len, shape.seq_len
        e = shape.n_head * shape.head_dim
        encoder = shape.n_layer * (4 * d * e + 3 * d * f)
        decoder = shape.n_decoder_layer * (8 * d * e + 3 * d * f) + shape.vocab_size * d
        scores_encoder = 12 * shape.n_layer * e * S * S
        scores_decoder = 12 * shape.n_decoder_layer * e * T * (T + S)
        return (6 * (encoder * S + decoder * T) + scores_encoder + scores_decoder) // S

    def lookup_parameters(self, shape: ModelShape) -> int:
        return shape.vocab_size * shape.d_model

    def linear_layers(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        d, f, e = shape.d_model, shape.ffn_hidden, shape.n_head * shape.head_dim
        attention = {**{f"{p}_proj": (d, e) for p in "qkv"}, "o_proj": (e, d)}
        mlp = {"mlp.gate_proj": (d, f), "mlp.up_proj": (d, f), "mlp.down_proj": (f, d)}
        layers: dict[str, tuple[int, int]] = {}
        for stack, count in (("encoder", shape.n_layer), ("decoder", shape.n_decoder_layer)):
            parts = ("attn", "cross") if stack == "decoder" else ("attn",)
            for i in range(count):
                layers.update({f"{stack}.blocks.{i}.{part}.{name}": size for part in parts
                               for name, size in attention.items()})
                layers.update({f"{stack}.blocks.{i}.{name}": size for name, size in mlp.items()})
        return {**layers, "lm_head": (d, shape.vocab_size)}

    def added_tokens(self, shape: ModelShape) -> list[str]:
        return [sentinel_token(i) for i in reversed(range(shape.sentinels))]  # <extra_id_0> last: the top id

    def example_inputs(self, ids: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (ids, ids), {"input_ids": ids, "decoder_input_ids": ids}

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        return {
            "architectures": [self.hf_architecture], "model_type": "t5", "vocab_size": shape.vocab_size,
            "d_model": shape.d_model, "d_kv": shape.head_dim, "d_ff": shape.ffn_hidden, "num_layers": shape.n_layer,
            "num_decoder_layers": shape.n_decoder_layer, "num_heads": shape.n_head,
            "relative_attention_num_buckets": POSITION_BUCKETS, "relative_attention_max_distance": MAX_DISTANCE,
            "dropout_rate": shape.dropout, "layer_norm_epsilon": shape.norm_eps, "feed_forward_proj": "gated-gelu",
            "is_encoder_decoder": True, "tie_word_embeddings": False, "use_cache": True, "torch_dtype": "float32",
        }

    def hf_special_ids(self, eot_id: int | None, stop_id: int | None) -> dict[str, Any]:
        # The decoder starts from end-of-text, as our seq2seq tasks and decoding do (an imported model's own start,
        # ModelShape.decoder_start_id, replaces it in export/hf.py).
        return {"eos_token_id": stop_id, "pad_token_id": eot_id, "decoder_start_token_id": eot_id}

    def hf_layout(self, shape: ModelShape) -> list[HfTensor]:
        # Only `shared`: transformers ties both stacks' embed_tokens to it on load.
        d, e, f, v = shape.d_model, shape.n_head * shape.head_dim, shape.ffn_hidden, shape.vocab_size
        tensors = [hf_tensor("embed.weight", "shared.weight", v, d),
                   hf_tensor("lm_head.weight", "lm_head.weight", v, d)]
        for stack, count in (("encoder", shape.n_layer), ("decoder", shape.n_decoder_layer)):
            tensors += [
                hf_tensor(f"{stack}.norm.weight", f"{stack}.final_layer_norm.weight", d),
                # transformers keeps a stack's one bucket table in its first block's self-attention
                hf_tensor(f"{stack}.position_bias.weight",
                          f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
                          POSITION_BUCKETS, shape.n_head),
            ]
            parts = [("attn", "SelfAttention")] + ([("cross", "EncDecAttention")] if stack == "decoder" else [])
            for i in range(count):
                ours, theirs = f"{stack}.blocks.{i}.", f"{stack}.block.{i}.layer."
                for j, (part, name) in enumerate(parts):
                    tensors.append(hf_tensor(f"{ours}{part}_norm.weight", f"{theirs}{j}.layer_norm.weight", d))
                    tensors += [hf_tensor(f"{ours}{part}.{p}_proj.weight", f"{theirs}{j}.{name}.{p}.weight", e, d)
                                for p in "qkv"]
                    tensors.append(hf_tensor(f"{ours}{part}.o_proj.weight", f"{theirs}{j}.{name}.o.weight", d, e))
                j = len(parts)
                tensors += [
                    hf_tensor(f"{ours}mlp_norm.weight", f"{theirs}{j}.layer_norm.weight", d),
                    hf_tensor(f"{ours}mlp.gate_proj.weight", f"{theirs}{j}.DenseReluDense.wi_0.weight", f, d),
                    hf_tensor(f"{ours}mlp.up_proj.weight", f"{theirs}{j}.DenseReluDense.wi_1.weight", f, d),
                    hf_tensor(f"{ours}mlp.down_proj.weight", f"{theirs}{j}.DenseReluDense.wo.weight", d, f),
                ]
        return tensors

    def from_hf_config(self, config: dict[str, Any]) -> ModelShape:
        # Original T5 (ReLU MLP, output tied to the input embedding and scaled by d_model^-0.5) computes otherwise.
        expect(config, "feed_forward_proj", ("gated-gelu",), "relu")
        expect(config, "tie_word_embeddings", (False,), True)
        expect(config, "scale_decoder_outputs", (False,), False)
        expect(config, "relative_attention_num_buckets", (POSITION_BUCKETS,), 32)
        expect(config, "relative_attention_max_distance", (MAX_DISTANCE,), 128)
        n_layer = required(config, "num_layers")
        n_head = required(config, "num_heads")
        return ModelShape(
            arch="t5", n_layer=n_layer, n_decoder_layer=config.get("num_decoder_layers") or n_layer, n_head=n_head,
            n_kv_head=n_head, d_model=required(config, "d_model"), head_dim=required(config, "d_kv"),
            ffn_hidden=required(config, "d_ff"), vocab_size=required(config, "vocab_size"),
            # Relative positions set no length limit; T5 was trained on 512 input tokens.
            seq_len=config.get("n_positions") or TRAINED_INPUT_LENGTH, dropout=0.0, rope_theta=10000.0,
            norm_eps=config.get("layer_norm_epsilon", 1e-6), tie_embeddings=False, hf_model_type="t5",
            # transformers starts T5's decoder from the pad token unless the config names another
            decoder_start_id=config.get("decoder_start_token_id", config.get("pad_token_id", 0)),
        )

    def with_tokenizer(self, shape: ModelShape, tokenizer_json: dict[str, Any]) -> ModelShape:
        """The sentinels an imported tokenizer has: `<extra_id_0>` and those numbered down from its id, as our span
        corruption numbers them (a Hugging Face T5 tokenizer's 100)."""
        top = token_id(tokenizer_json, sentinel_token(0))
        count = 0
        while top is not None and token_id(tokenizer_json, sentinel_token(count)) == top - count:
            count += 1
        return shape.model_copy(update={"sentinels": count})


FAMILY = T5()
