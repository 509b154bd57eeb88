"""Text embeddings from an encoder's pretrain artifact (a `bert` model): what `/v1/embeddings` answers.

An embedding is the mean of the final hidden states (after the last norm) over the text's tokens, scaled to unit
length, so a dot product of two embeddings is their cosine similarity. Texts longer than the model's context keep
their beginning, and say so.
"""

from __future__ import annotations

from pathlib import Path


class TextEncoder:
    def __init__(self, folder: Path, device: str = "cpu"):
        import torch
        from tokenizers import Tokenizer

        from llmrecipe.generate.artifact import ArtifactError
        from llmrecipe.models.build import load_trained
        from llmrecipe.models.registry import family

        model, shape = load_trained(folder, device)
        if family(shape.arch).causal:
            raise ArtifactError(f"{folder} holds a `{shape.arch}` decoder; embeddings come from encoders (`bert`)")
        model.lm_head = torch.nn.Identity()  # hidden states (B, T, D) instead of token logits
        self.model, self.shape, self.device = model, shape, device
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.name = folder.name

    def embed(self, texts: list[str], batch_size: int = 32) -> tuple[list[list[float]], int, list[bool]]:
        """Unit-length embeddings (N, D) in text order, the tokens read, and per text whether it was cut."""
        import torch

        from llmrecipe.models.attention import PaddedRows
        from llmrecipe.models.classifier import pad_right

        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        rows = [encoding.ids[: self.shape.seq_len] for encoding in encodings]
        if any(not row for row in rows):
            raise ValueError("a text encodes to no tokens (an empty string?); every input needs some text")
        vectors: list[list[float]] = []
        with torch.no_grad():
            for first in range(0, len(rows), batch_size):
                ids, lengths = pad_right(rows[first : first + batch_size])  # (b, T), (b,)
                hidden = self.model(ids.to(self.device), PaddedRows(lengths.to(self.device), ids.size(1)))  # (b, T, D)
                real = (torch.arange(ids.size(1), device=self.device) < lengths.to(self.device)[:, None]).float()
                mean = (hidden * real[..., None]).sum(1) / real.sum(1, keepdim=True)  # (b, D)
                vectors += torch.nn.functional.normalize(mean, dim=-1).cpu().tolist()
        return vectors, sum(len(row) for row in rows), [len(e.ids) > self.shape.seq_len for e in encodings]
