"""The shape of a network: plain data from the plan, saved beside the weights as config.json. Torch-free."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator


class RopeScaling(BaseModel):
    """Llama 3's rotary frequency scaling (`rope_scaling` of type `llama3`): wavelengths longer than the original
    context divided by `factor`, shorter than `original / high_freq_factor` kept, those between interpolated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["llama3"] = "llama3"
    factor: float
    low_freq_factor: float
    high_freq_factor: float
    original_max_position_embeddings: int


class ModelShape(BaseModel):
    """Everything needed to build the network; its family (`arch`) says what each field means there."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    arch: str
    """The family, a key of models/registry.py."""
    n_layer: int
    n_head: int
    n_kv_head: int
    d_model: int
    head_dim: int
    ffn_hidden: int
    vocab_size: int
    """The tokenizer's vocabulary rounded up to a multiple of 64 (faster matmuls; extra rows are never targets)."""
    seq_len: int
    dropout: float
    rope_theta: float
    norm_eps: float = 1e-5
    tie_embeddings: bool
    mask_token_id: int | None = None
    """Masked-language models only: the id of the mask token, the first row past the tokenizer's vocabulary."""
    mask_fraction: float = 0.15
    """Masked-language models only: fraction of positions that are masked-language-modelling targets."""
    n_decoder_layer: int | None = None
    """Encoder-decoder models only: layers of the decoder stack (`n_layer` counts the encoder's)."""
    target_len: int | None = None
    """Encoder-decoder models only: decoder positions per pre-training example (`seq_len` is the encoder's)."""
    sentinels: int = 0
    """Span corruption only: sentinel tokens appended to the tokenizer, numbered down from the top of its ids."""
    noise_density: float = 0.15
    """Span corruption only: fraction of each example's tokens that are corrupted (moved to the target)."""
    mean_span_length: float = 3.0
    """Span corruption only: mean length of a corrupted span."""
    decoder_start_id: int | None = None
    """Encoder-decoder models only: the id the decoder starts from, when it is not end-of-text (an imported T5
    starts from its pad token, `decoder_start_token_id`, as it was pre-trained)."""
    qkv_bias: bool = False
    """`llama`: the q, k and v projections have biases (Qwen2)."""
    qk_norm: bool = False
    """`llama`: an RMSNorm over each head's queries and keys before the rotation (Qwen3)."""
    rope_scaling: RopeScaling | None = None
    """`llama`: Llama 3's long-context frequency scaling; None: plain rotary angles."""
    post_norm: bool = False
    """`bert`: the original BERT layout (a Hugging Face `BertModel`): LayerNorm after each residual sum and after
    the embeddings, token-type embeddings, exact (erf) GELU, and an output transform before the vocabulary."""
    type_vocab_size: int = 0
    """`bert` with `post_norm`: rows of the token-type embedding (segment A/B); every token here is type 0."""
    lm_head: bool = True
    """False for an encoder imported without its masked-language head (`BertModel`): the model returns its hidden
    states, for a classification head to read."""
    hf_model_type: str | None = None
    """The Hugging Face `model_type` an imported model came from (`qwen2`, `mistral`, ...); its Hugging Face export
    writes that family again. None: the family's own (`llama`, `gpt2`)."""

    def decoder_start(self, end_of_text: int) -> int:
        """The id an encoder-decoder's decoder starts from: its own, else the tokenizer's end-of-text."""
        return self.decoder_start_id if self.decoder_start_id is not None else end_of_text

    @field_validator("arch")
    @classmethod
    def _known_family(cls, arch: str) -> str:
        from llmrecipe.models.registry import FAMILIES

        if arch not in FAMILIES:
            raise ValueError(f"arch = '{arch}' is not an architecture llmrecipe knows; it knows {sorted(FAMILIES)}")
        return arch
