"""Texts read by a model's blocks: the token states after any block, and text embeddings (what `/v1/embeddings`
answers and what semantic similarity compares).

A text is encoded as its tokenizer's post-processor says: an imported BERT adds [CLS] and [SEP] around it, as
sentence-transformers and bert-score do; our own tokenizers add nothing. A token's state after block k is the
residual stream there, through the final norm of a pre-norm model (the states its output layer reads); after the
last block of an imported BERT it is the `last_hidden_state` of Hugging Face's `BertModel`. An embedding is the mean
of a text's final token states scaled to unit length, so a dot product of two embeddings is their cosine
similarity. Texts longer than the model's context keep their beginning (and the closing token the post-processor
adds), and say so.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    import torch

_SWAP = threading.Lock()
"""Reading states swaps a model's blocks and output layer for the length of a forward pass: one reader at a time
(a server answers requests on several threads)."""


@dataclass
class TokenStates:
    """One text as the model read it."""

    ids: list[int]
    states: "torch.Tensor"
    """(T, D) fp32 on the CPU, one row per token id."""
    special: list[bool]
    """Per token: added by the tokenizer's post-processor ([CLS], [SEP]) rather than read from the text."""
    cut: bool
    """The text was longer than the model's context and lost its end."""


class TextEncoder:
    """A model with transformer blocks (a `bert` encoder, or a decoder's own states) reading whole texts."""

    def __init__(self, model: "torch.nn.Module", tokenizer: Any, device: str = "cpu"):
        from tokenizers import Tokenizer

        from llmrecipe.models.registry import family

        self.model, self.shape, self.device = model, model.shape, device
        self.bidirectional = not family(self.shape.arch).causal
        self.tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy: the caller's tokenizer is not truncated
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.shape.seq_len)  # counts the tokens the post-processor adds

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> "TextEncoder":
        """The encoder of an artifact folder (a `bert` pretrain or import step) with its tokenizer."""
        from tokenizers import Tokenizer

        from llmrecipe.generate.artifact import ArtifactError
        from llmrecipe.models.build import load_trained
        from llmrecipe.models.registry import family

        model, shape = load_trained(folder, device)
        if not family(shape.arch).embeds_texts:
            raise ArtifactError(f"{folder} holds a `{shape.arch}` model; embeddings come from encoders (`bert`)")
        return cls(model, Tokenizer.from_file(str(folder / "tokenizer.json")), device)

    @property
    def layers(self) -> int:
        return len(self.model.blocks)

    def token_states(self, texts: list[str], layer: int | None = None, batch_size: int = 32) -> list[TokenStates]:
        """Each text's token states after block `layer` (0: the embeddings; None: the last block), in text order. A
        text that encodes to no tokens gets no states (0, D)."""
        import torch

        from llmrecipe.models.attention import PaddedRows
        from llmrecipe.models.classifier import pad_right

        encodings = self.tokenizer.encode_batch(texts)
        found = [TokenStates(e.ids, torch.zeros(0, self.shape.d_model), [bool(s) for s in e.special_tokens_mask],
                             bool(e.overflowing)) for e in encodings]
        filled = sorted((i for i, e in enumerate(encodings) if e.ids), key=lambda i: len(encodings[i].ids))
        with torch.no_grad(), _states_after(self.model, self.layers if layer is None else layer):
            for first in range(0, len(filled), batch_size):  # similar lengths together: little padding
                chosen = filled[first : first + batch_size]
                ids, lengths = pad_right([encodings[i].ids for i in chosen])  # (b, T), (b,)
                ids, lengths = ids.to(self.device), lengths.to(self.device)
                # a causal decoder needs no layout for right padding: no real token looks right
                layout = PaddedRows(lengths, ids.size(1)) if self.bidirectional else None
                hidden = self.model(ids, layout).float().cpu()  # (b, T, D)
                for row, i in enumerate(chosen):
                    found[i].states = hidden[row, : len(encodings[i].ids)]
        return found

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[list[list[float]], int, list[bool]]:
        """Unit-length embeddings (N, D) in text order, the tokens read, and per text whether it was cut."""
        read = self.token_states(texts, batch_size=batch_size)
        if any(not text.ids for text in read):
            raise ValueError("a text encodes to no tokens (an empty string?); every input needs some text")
        vectors = [mean_embedding(text.states).tolist() for text in read]
        return vectors, sum(len(text.ids) for text in read), [text.cut for text in read]


def mean_embedding(states: "torch.Tensor") -> "torch.Tensor":
    """Token states (T, D) -> their mean scaled to unit length (D,): sentence-transformers' mean pooling followed by
    its Normalize module."""
    import torch

    return torch.nn.functional.normalize(states.mean(0), dim=-1)


@contextmanager
def _states_after(model: "torch.nn.Module", layer: int) -> Iterator[None]:
    """Inside the block, `model(ids, layout)` returns the states after its first `layer` blocks instead of logits."""
    import torch

    with _SWAP:
        blocks, head = model.blocks, model.lm_head
        model.blocks, model.lm_head = blocks[:layer], torch.nn.Identity()
        try:
            yield
        finally:
            model.blocks, model.lm_head = blocks, head
