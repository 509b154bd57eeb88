"""The shape of a network: plain data from the plan, saved beside the weights as config.json. Torch-free."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


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

    @field_validator("arch")
    @classmethod
    def _known_family(cls, arch: str) -> str:
        from llmrecipe.models.registry import FAMILIES

        if arch not in FAMILIES:
            raise ValueError(f"arch = '{arch}' is not an architecture llmrecipe knows; it knows {sorted(FAMILIES)}")
        return arch
