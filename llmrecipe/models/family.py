"""What an architecture is, in one place: its shape rules, parameter count and FLOPs, LoRA targets, FSDP unit,
modules (with their cached decoding forward) and Hugging Face layout.

Torch-free: the plan asks a family for everything it derives, without importing torch; `module()` imports the
torch modules only when a model is built. A new architecture is a new family package and one line in registry.py.
"""

from __future__ import annotations

import importlib
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from llmrecipe.models.shape import ModelShape

Objective = Literal["causal_lm", "masked_lm", "span_corruption"]


class ShapeError(ValueError):
    """Settings a family cannot build; the message names the recipe's `model.*` fields and the fix."""


class ModelSettings(Protocol):
    """A recipe's `model` table, as the family reads it (recipe/pretrain.py: ModelConfig)."""

    arch: str
    n_layer: int
    n_head: int
    n_kv_head: int | None
    d_model: int
    seq_len: int
    ffn_mult: float | None
    dropout: float
    rope_theta: float
    tie_embeddings: bool
    mask_fraction: float
    n_encoder_layer: int | None
    n_decoder_layer: int | None
    sentinels: int
    noise_density: float
    mean_span_length: float


class CheckpointError(ValueError):
    """A Hugging Face checkpoint this family cannot take as it is; the message names the option and what is
    supported."""


@dataclass(frozen=True)
class HfTensor:
    """One tensor of ours and where the Hugging Face layout keeps it."""

    ours: str
    theirs: tuple[str, ...]
    """Their tensor names; several are concatenated along the first dimension into ours (BERT's q, k, v)."""
    shape: tuple[int, ...]
    """The shape of each of theirs, as stored."""
    transposed: bool = False
    """Stored as (in, out), the transpose of nn.Linear's weight (GPT-2's Conv1D)."""


def hf_tensor(ours: str, theirs: str, *shape: int, transposed: bool = False) -> HfTensor:
    return HfTensor(ours, (theirs,), tuple(shape), transposed)


def round_up(value: float, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple)


def matches_target(module_name: str, target: str) -> bool:
    """A LoRA target names a module by a dotted suffix: `q_proj` and `attn.q_proj` both match `blocks.0.attn.q_proj`."""
    return module_name == target or module_name.endswith("." + target)


class Family(ABC):
    """The defaults of a transformer family; each architecture's package subclasses it and overrides what differs."""

    name: ClassVar[str]
    module_path: ClassVar[str]
    """`package.module:Class` of the torch module, imported when a model is built."""
    objective: ClassVar[Objective] = "causal_lm"
    """What pre-training teaches: next tokens (`causal_lm`), masked tokens (`masked_lm`) or corrupted spans
    (`span_corruption`, encoder-decoders)."""
    encoder_decoder: ClassVar[bool] = False
    """An encoder reads the input and a decoder writes the output (`model(inputs, decoder_inputs)`): text-to-text."""
    causal: ClassVar[bool] = True
    """Each position sees only earlier ones: the model generates, takes SFT and scores log-likelihoods."""
    attention: ClassVar[bool] = True
    grouped_query: ClassVar[bool] = False
    """Supports fewer key/value heads than query heads (`model.n_kv_head`)."""
    even_head_dim: ClassVar[bool] = False
    """Rotary embeddings turn pairs of a head's dimensions, so its size must be even."""
    ffn_mult: ClassVar[float] = 4.0
    """MLP width per `d_model` when `model.ffn_mult` is unset."""
    lora_targets: ClassVar[tuple[str, ...]] = ()
    """Default LoRA targets (the attention projections, as in Hu et al., 2021); empty: no adapters for this family."""
    hidden_states: ClassVar[bool] = True
    """Its forward pass runs the embeddings, then `blocks`, then (pre-norm) a final norm and `lm_head`: the states
    after any block can be read (semantic similarity matches them token by token)."""
    fsdp_unit: ClassVar[str | None] = "blocks"
    """The module list whose entries FSDP shards (and compiles) one by one; None: the whole model is one unit."""
    decodes: ClassVar[bool] = False
    """It generates with a KV cache: a decoder's forward takes one (`model(idx, cache=..., last_only=...)`; also
    ONNX with past), an encoder-decoder's `start_decoding(inputs, mask)` and `decode(ids, cache, last_only)`."""
    hf_architecture: ClassVar[str | None] = None
    """The transformers class the Hugging Face export writes; None: no export."""
    hf_sequence_classification: ClassVar[str | None] = None
    """The transformers class a classify fine-tune of this family exports to (its head has no bias, like ours for
    decoders); None: no exact counterpart."""
    onnx_layout: ClassVar[Literal["decoder", "seq2seq"]] = "decoder"
    """What the ONNX export writes: `decoder`, one model.onnx with past key/values; `seq2seq`, Optimum's encoder,
    decoder and decoder-with-past graphs."""
    hf_auto_class: ClassVar[str] = "AutoModelForCausalLM"
    """The transformers auto class that loads the export."""
    hf_model_types: ClassVar[dict[str, str]] = {}
    """Hugging Face `model_type`s this family imports -> the transformers class that type exports as."""
    hf_base_prefix: ClassVar[str] = ""
    """The prefix of the base model's tensors in a checkpoint with a head (`bert.`), absent from a bare base model's
    checkpoint (`BertModel`); an import finds its tensors under either name."""
    hf_unused: ClassVar[tuple[str, ...]] = ()
    """Suffixes of checkpoint tensors a model of this family does not use (buffers saved by old versions, a
    pooler), skipped on import rather than refused."""

    @property
    def embeds_texts(self) -> bool:
        """A bidirectional stack of blocks (`bert`): its states embed whole texts (serve's /v1/embeddings, the
        encoder of semantic similarity)."""
        return self.hidden_states and not self.causal

    # --- shape --------------------------------------------------------------------------------------------------

    def shape(self, settings: ModelSettings, vocab_size: int) -> ModelShape:
        """The shape for a tokenizer of `vocab_size` ids; raises ShapeError for settings the family cannot build."""
        m = settings
        if not self.encoder_decoder and (m.n_encoder_layer is not None or m.n_decoder_layer is not None):
            raise ShapeError(f"model.n_encoder_layer / model.n_decoder_layer: `{self.name}` has one stack; "
                             "use model.n_layer")
        if self.attention and m.d_model % m.n_head:
            raise ShapeError(f"model.d_model = {m.d_model} is not a multiple of model.n_head = {m.n_head}; "
                             f"pick d_model = {round_up(m.d_model, m.n_head)} or an n_head that divides it")
        if m.n_kv_head is not None and not self.grouped_query:
            raise ShapeError(f"model.n_kv_head: grouped-query attention is not part of `{self.name}`; remove it")
        n_kv_head = m.n_kv_head or m.n_head
        if m.n_head % n_kv_head:
            raise ShapeError(f"model.n_head = {m.n_head} is not a multiple of model.n_kv_head = {n_kv_head}; "
                             "each key/value head must serve the same number of query heads")
        head_dim = m.d_model // m.n_head
        if self.even_head_dim and head_dim % 2:
            raise ShapeError(f"head size d_model / n_head = {head_dim} is odd; rotary embeddings need an even head size")
        ffn_mult = m.ffn_mult if m.ffn_mult is not None else self.ffn_mult
        masked = self.objective == "masked_lm"
        # A masked-language model needs one extra id, the mask token, right after the tokenizer's vocabulary.
        rows = vocab_size + (1 if masked else 0)
        return ModelShape(
            arch=self.name, n_layer=m.n_layer, n_head=m.n_head, n_kv_head=n_kv_head, d_model=m.d_model,
            head_dim=head_dim, ffn_hidden=round_up(ffn_mult * m.d_model, 64) if self.attention else 0,
            vocab_size=round_up(rows, 64), seq_len=m.seq_len, dropout=m.dropout, rope_theta=m.rope_theta,
            tie_embeddings=m.tie_embeddings, mask_token_id=vocab_size if masked else None,
            mask_fraction=m.mask_fraction,
        )

    def derived(self, shape: ModelShape) -> dict[str, Any]:
        """Values of the shape this family derives beyond the common ones, for `llmrecipe plan` to show."""
        return {}

    # --- size ---------------------------------------------------------------------------------------------------

    @abstractmethod
    def parameter_count(self, shape: ModelShape) -> int:
        """Exactly the parameters of the built model (tests/test_models.py checks every family)."""

    def embedding_parameters(self, shape: ModelShape) -> int:
        return shape.vocab_size * shape.d_model * (1 if shape.tie_embeddings else 2)

    def lookup_parameters(self, shape: ModelShape) -> int:
        """Parameters read by table lookup rather than multiplied: the input embedding when it is not also the
        output projection (tied, it is counted once, as the output matmul)."""
        return 0 if shape.tie_embeddings else shape.vocab_size * shape.d_model

    def flops_per_token(self, shape: ModelShape) -> int:
        """Training FLOPs per token: 6 per matmul parameter, plus 12·L·d·T for attention scores (PaLM, appendix B)."""
        matmul_parameters = self.parameter_count(shape) - self.lookup_parameters(shape)
        attention = 12 * shape.n_layer * shape.d_model * shape.seq_len if self.attention else 0
        return 6 * matmul_parameters + attention

    # --- adapters -----------------------------------------------------------------------------------------------

    def block_linears(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        """Name within a block -> (in, out) features of each of its nn.Linear layers."""
        return {}

    def linear_layers(self, shape: ModelShape) -> dict[str, tuple[int, int]]:
        """Module name -> (in, out) features of every nn.Linear of the built model."""
        block = self.block_linears(shape)
        layers = {f"blocks.{i}.{name}": size for i in range(shape.n_layer) for name, size in block.items()}
        return {**layers, "lm_head": (shape.d_model, shape.vocab_size)}

    # --- torch --------------------------------------------------------------------------------------------------

    def module(self) -> type:
        """The nn.Module class (imports torch)."""
        path, name = self.module_path.split(":")
        return getattr(importlib.import_module(path), name)

    # --- Hugging Face layout ------------------------------------------------------------------------------------

    def added_tokens(self, shape: ModelShape) -> list[str]:
        """Special tokens the pre-training step appends to its tokenizer, in id order (the shape has rows for them)."""
        return []

    def example_inputs(self, ids: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Token ids (B, T) -> (our model's positional arguments, transformers' keyword arguments) of one forward
        pass over them, for parity checks."""
        return (ids,), {"input_ids": ids}

    def hf_special_ids(self, eot_id: int | None, stop_id: int | None) -> dict[str, Any]:
        """The special token ids of the exported config.json and generation_config.json."""
        return {"bos_token_id": eot_id, "eos_token_id": stop_id}

    def hf_config(self, shape: ModelShape) -> dict[str, Any]:
        raise NotImplementedError(f"`{self.name}` models have no Hugging Face layout")

    def from_hf_config(self, config: dict[str, Any]) -> ModelShape:
        """A Hugging Face config.json -> our shape; raises CheckpointError for an option this family does not
        compute exactly."""
        raise CheckpointError(f"`{self.name}` models cannot be imported from Hugging Face checkpoints")

    def with_tokenizer(self, shape: ModelShape, tokenizer_json: dict[str, Any]) -> ModelShape:
        """An imported shape completed from the checkpoint's tokenizer.json (what config.json does not say)."""
        return shape

    def hf_layout(self, shape: ModelShape) -> list[HfTensor]:
        """Every tensor of our state dict and where the Hugging Face layout keeps it (a tied output weight is left
        out, as transformers saves it); import and export both follow this one table."""
        raise NotImplementedError(f"`{self.name}` models have no Hugging Face layout")

    hf_output: ClassVar[str] = "lm_head.weight"
    """Where the Hugging Face layout keeps the output projection; a tied model's copy of it is skipped on import (the
    embedding is the output weight, as transformers ties it on load)."""

    def hf_skipped(self, shape: ModelShape) -> tuple[str, ...]:
        """Suffixes of checkpoint tensors an import of this shape reads past."""
        return self.hf_unused + ((self.hf_output,) if shape.tie_embeddings else ())

    def hf_export_architecture(self, shape: ModelShape) -> str | None:
        """The transformers class a Hugging Face export writes: an imported model's own, else the family's."""
        if shape.hf_model_type is not None:
            return self.hf_model_types[shape.hf_model_type]
        return self.hf_architecture

    def hf_tensors(self, state: dict[str, Any], shape: ModelShape) -> dict[str, Any]:
        """Our state dict -> the transformers tensor names (tied output weights left out, as transformers expects)."""
        renamed = {}
        for entry in self.hf_layout(shape):
            tensor = state[entry.ours]
            tensor = tensor.t() if entry.transposed else tensor
            for name, part in zip(entry.theirs, tensor.chunk(len(entry.theirs))):
                renamed[name] = part
        return renamed
