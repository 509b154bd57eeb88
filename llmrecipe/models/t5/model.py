"""T5 v1.1 encoder-decoder (Raffel et al., 2020), in the layout of Hugging Face's T5ForConditionalGeneration.

Reads top to bottom: relative position buckets -> Attention -> GatedGELU -> Block -> Stack -> DecoderCache -> T5.
T5 attention has no 1/sqrt(E) scaling (its initialisation accounts for it) and no absolute positions: each stack
adds a learned bias per head and relative-distance bucket to its attention scores, one table shared by its layers.
The decoder's cross-attention keys and values are computed once per input (`cross_keys_values`) and reused at every
decoding step; its self-attention keeps a KV cache (`DecoderCache`).
Shapes: B batch, S encoder (input) positions, T decoder positions, P cached decoder positions, D d_model,
H heads, E head_dim, F ffn_hidden, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmrecipe.models.llama.model import RMSNorm
from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import MAX_DISTANCE, POSITION_BUCKETS

KeysValues = tuple[torch.Tensor, torch.Tensor]


def relative_buckets(relative: torch.Tensor, bidirectional: bool) -> torch.Tensor:
    """Key position - query position -> bucket id: half the buckets exact distances, the other half log-spaced up to
    MAX_DISTANCE. Bidirectional (encoder) splits the buckets between keys before and after the query; the causal
    decoder only ever looks back."""
    buckets = POSITION_BUCKETS
    offset = torch.zeros_like(relative)
    if bidirectional:
        buckets //= 2
        offset = (relative > 0).long() * buckets
        distance = relative.abs()
    else:
        distance = (-relative).clamp(min=0)
    exact = buckets // 2
    log_spaced = exact + (torch.log(distance.float().clamp(min=1) / exact) / math.log(MAX_DISTANCE / exact)
                          * (buckets - exact)).long()
    return offset + torch.where(distance < exact, distance, log_spaced.clamp(max=buckets - 1))


class Attention(nn.Module):
    """Multi-head attention without biases or score scaling; keys and values may come from another sequence."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.n_head, self.head_dim = shape.n_head, shape.head_dim
        inner = shape.n_head * shape.head_dim
        self.q_proj = nn.Linear(shape.d_model, inner, bias=False)
        self.k_proj = nn.Linear(shape.d_model, inner, bias=False)
        self.v_proj = nn.Linear(shape.d_model, inner, bias=False)
        self.o_proj = nn.Linear(inner, shape.d_model, bias=False)
        self.dropout = shape.dropout

    def heads(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, E)

    def keys_values(self, x: torch.Tensor) -> KeysValues:
        return self.heads(self.k_proj(x)), self.heads(self.v_proj(x))  # (B, H, S, E) each

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) attends over keys/values (B, H, S, E) with `bias` (B or 1, H or 1, T, S), -inf = masked."""
        B, T, D = x.shape
        q = self.heads(self.q_proj(x))  # (B, H, T, E)
        if torch.compiler.is_exporting():  # the exporter's SDPA decomposition with a mask cannot reshape its output
            y = torch.matmul((torch.matmul(q, keys.transpose(-2, -1)) + bias).softmax(-1), values)  # (B, H, T, E)
        else:
            dropout = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias.to(x.dtype), dropout_p=dropout,
                                               scale=1.0)  # (B, H, T, E)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class GatedGELU(nn.Module):
    """down(gelu(gate(x)) * up(x)) with the tanh GELU, T5 v1.1's MLP (Shazeer, 2020)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.d_model, shape.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(shape.d_model, shape.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(shape.ffn_hidden, shape.d_model, bias=False)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.dropout(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm residual block: self-attention, cross-attention (decoder only), MLP."""

    def __init__(self, shape: ModelShape, cross: bool):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.attn = Attention(shape)
        if cross:
            self.cross_norm = RMSNorm(shape.d_model, shape.norm_eps)
            self.cross = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.mlp = GatedGELU(shape)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, past: KeysValues | None = None,
                cross_kv: KeysValues | None = None, cross_bias: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, KeysValues]:
        """-> the block's output, and its self-attention keys and values including `past` (for a cache)."""
        normed = self.attn_norm(x)
        keys, values = self.attn.keys_values(normed)  # (B, H, T, E)
        if past is not None:
            keys, values = torch.cat([past[0], keys], dim=2), torch.cat([past[1], values], dim=2)  # (B, H, P+T, E)
        x = x + self.dropout(self.attn(normed, keys, values, bias))
        if cross_kv is not None:
            x = x + self.dropout(self.cross(self.cross_norm(x), *cross_kv, cross_bias))
        return x + self.dropout(self.mlp(self.mlp_norm(x))), (keys, values)


class Stack(nn.Module):
    """The encoder (bidirectional) or the decoder (causal, with cross-attention), with its shared bucket table."""

    def __init__(self, shape: ModelShape, n_layer: int, decoder: bool):
        super().__init__()
        self.decoder = decoder
        self.activation_checkpointing = False
        """Set by the trainer: recompute each block in the backward pass instead of keeping its activations."""
        self.position_bias = nn.Embedding(POSITION_BUCKETS, shape.n_head)
        self.blocks = nn.ModuleList(Block(shape, cross=decoder) for _ in range(n_layer))
        self.norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.dropout = nn.Dropout(shape.dropout)

    def bias(self, queries: int, keys: int, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Attention bias (B or 1, H, queries, keys) of the last `queries` of `keys` positions: the relative position
        bias, -inf at keys after the query (decoder) and at padding keys (`key_mask` (B, keys), True = real)."""
        key_pos = torch.arange(keys, device=self.position_bias.weight.device)
        query_pos = key_pos[keys - queries:]
        relative = key_pos[None, :] - query_pos[:, None]  # (Tq, Tk)
        bias = self.position_bias(relative_buckets(relative, bidirectional=not self.decoder))  # (Tq, Tk, H)
        bias = bias.permute(2, 0, 1)[None]  # (1, H, Tq, Tk)
        if self.decoder:
            bias = bias.masked_fill(relative > 0, float("-inf"))
        if key_mask is not None:
            bias = bias.masked_fill(~key_mask[:, None, None, :], float("-inf"))  # (B, H, Tq, Tk)
        return bias

    def forward(self, x: torch.Tensor, bias: torch.Tensor, cache: "DecoderCache | None" = None,
                cross: list[KeysValues] | None = None, cross_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.dropout(x)
        for layer, block in enumerate(self.blocks):
            past = cache.layers[layer] if cache is not None and cache.layers else None
            cross_kv = cross[layer] if cross is not None else None
            if self.activation_checkpointing and self.training:
                x, kv = checkpoint(block, x, bias, past, cross_kv, cross_bias, use_reentrant=False)
            else:
                x, kv = block(x, bias, past, cross_kv, cross_bias)
            if cache is not None:
                cache.store(layer, kv)
        return self.dropout(self.norm(x))


class DecoderCache:
    """What decoding one input needs at every step: the cross-attention keys and values of the encoder output
    (computed once), the padding mask of the input, and the decoder's self-attention keys and values so far."""

    def __init__(self, cross: list[KeysValues], input_mask: torch.Tensor | None):
        self.cross, self.input_mask = cross, input_mask
        self.layers: list[KeysValues] = []
        self._next: list[KeysValues] = []

    @property
    def length(self) -> int:
        return self.layers[0][0].size(2) if self.layers else 0

    def store(self, layer: int, kv: KeysValues) -> None:
        self._next.append(kv)
        if len(self._next) == len(self.cross):  # every layer done: the step's keys become the past
            self.layers, self._next = self._next, []

    def select(self, rows: torch.Tensor) -> None:
        """Keep the batch rows `rows` (finished sequences dropped, or beams reordered)."""
        self.cross = [(k[rows], v[rows]) for k, v in self.cross]
        self.layers = [(k[rows], v[rows]) for k, v in self.layers]
        self.input_mask = self.input_mask[rows] if self.input_mask is not None else None


class T5(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)  # shared by both stacks' inputs
        self.encoder = Stack(shape, shape.n_layer, decoder=False)
        self.decoder = Stack(shape, shape.n_decoder_layer, decoder=True)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)  # untied (T5 v1.1)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """T5's initialisation (Mesh TensorFlow): N(0, 1/fan_in) so unscaled attention scores start at unit size;
        queries take a further 1/E for the missing 1/sqrt(E) score scaling."""
        d, inner = self.shape.d_model, self.shape.n_head * self.shape.head_dim
        nn.init.normal_(self.embed.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=d ** -0.5)
        for stack in (self.encoder, self.decoder):
            nn.init.normal_(stack.position_bias.weight, std=d ** -0.5)
            for block in stack.blocks:
                for attn in [block.attn] + ([block.cross] if stack.decoder else []):
                    nn.init.normal_(attn.q_proj.weight, std=(d * self.shape.head_dim) ** -0.5)
                    nn.init.normal_(attn.k_proj.weight, std=d ** -0.5)
                    nn.init.normal_(attn.v_proj.weight, std=d ** -0.5)
                    nn.init.normal_(attn.o_proj.weight, std=inner ** -0.5)
                nn.init.normal_(block.mlp.gate_proj.weight, std=d ** -0.5)
                nn.init.normal_(block.mlp.up_proj.weight, std=d ** -0.5)
                nn.init.normal_(block.mlp.down_proj.weight, std=self.shape.ffn_hidden ** -0.5)

    def encode(self, inputs: torch.Tensor, input_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Input ids (B, S), `input_mask` (B, S) True = real token (None: no padding) -> encoder output (B, S, D)."""
        S = inputs.size(1)
        return self.encoder(self.embed(inputs), self.encoder.bias(S, S, input_mask))

    def cross_keys_values(self, memory: torch.Tensor) -> list[KeysValues]:
        """Each decoder layer's cross-attention keys and values of the encoder output (B, S, D): once per input."""
        return [block.cross.keys_values(memory) for block in self.decoder.blocks]

    def start_decoding(self, inputs: torch.Tensor, input_mask: torch.Tensor | None = None) -> DecoderCache:
        """Encode the inputs once; the returned cache then serves every decoding step of `decode`."""
        return DecoderCache(self.cross_keys_values(self.encode(inputs, input_mask)), input_mask)

    def decode(self, decoder_inputs: torch.Tensor, cache: DecoderCache, last_only: bool = False) -> torch.Tensor:
        """The next decoder ids (B, T) after the cache's past -> logits (B, T, V), or (B, V) with `last_only`;
        the cache grows by T positions."""
        T = decoder_inputs.size(1)
        bias = self.decoder.bias(T, cache.length + T, None)  # (1, H, T, P+T)
        cross_bias = self._cross_bias(cache.input_mask, cache.cross[0][0].size(2))
        x = self.decoder(self.embed(decoder_inputs), bias, cache, cache.cross, cross_bias)  # (B, T, D)
        return self.lm_head(x[:, -1] if last_only else x)

    def forward(self, inputs: torch.Tensor, decoder_inputs: torch.Tensor,
                input_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Input ids (B, S) and decoder input ids (B, T) -> next-token logits (B, T, V). Right padding of the decoder
        inputs needs no mask: no real position looks right."""
        memory = self.encode(inputs, input_mask)  # (B, S, D)
        T, S = decoder_inputs.size(1), inputs.size(1)
        x = self.decoder(self.embed(decoder_inputs), self.decoder.bias(T, T, None), None,
                         self.cross_keys_values(memory), self._cross_bias(input_mask, S))
        return self.lm_head(x)  # (B, T, V)

    def _cross_bias(self, input_mask: torch.Tensor | None, S: int) -> torch.Tensor:
        """(B or 1, 1, 1, S): no position bias across the stacks, -inf at padded input positions."""
        device = self.embed.weight.device
        if input_mask is None:
            return torch.zeros(1, 1, 1, S, device=device)
        return torch.zeros(input_mask.shape, device=device).masked_fill(~input_mask, float("-inf"))[:, None, None]
