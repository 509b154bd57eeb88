"""A trained decoder's cached forward pass, written for decoding: the arithmetic of models/llama.py and
models/gpt2.py with a cache, as one function over the weights instead of a tree of modules.

At batch 1 a token's matmuls are small, so every module call and every extra operator is a visible share of
a step (Hugging Face `generate` spends most of its time there). Here: no module is called; q/k/v (and LLaMA's
gate/up) projections are fused into one matmul each, which also yields q and k with each head rolled by half
(weights rolled once), so rotary rotates q and k together in three operators; grouped-query attention reads
the shared key/value heads directly instead of repeating them; only the last position goes through the output
projection. The fused weights are copies made when the step is built (so torch decoding of a LLaMA-style
model holds its q/k/v and gate/up weights twice, its q and k three times; the onnxruntime backend holds only
the step's copies), and a change to the model's weights afterwards needs a new step. tests/test_generate.py
checks its logits against the model's own forward, with and without padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmrecipe.generate.cache import DecodeState


def decode_step(model: nn.Module) -> LlamaStep | GPT2Step:
    """The decoding forward of a `llama` or `gpt2` model: `step(idx (B, T), cache) -> last logits (B, V)`, or
    logits at every position (B, T, V) with `last_only=False` (the ONNX export, whose checks need them all)."""
    steps = {"llama": LlamaStep, "gpt2": GPT2Step}
    if model.shape.arch not in steps:
        raise ValueError(f"no decoding step for `{model.shape.arch}` models; it exists for {sorted(steps)}")
    return steps[model.shape.arch](model)


class LlamaStep:
    def __init__(self, model: nn.Module):
        shape = model.shape
        self.n_head, self.n_kv_head, self.head_dim = shape.n_head, shape.n_kv_head, shape.head_dim
        self.d_model, self.eps = shape.d_model, shape.norm_eps
        with torch.no_grad():
            self.embed = model.embed.weight.detach()  # (V, D)
            self.layers = [
                (
                    block.attn_norm.weight.detach(),
                    self._qkv_weight(block.attn),  # ((2H + 3K) E, D)
                    block.attn.o_proj.weight.detach(),
                    block.mlp_norm.weight.detach(),
                    torch.cat([block.mlp.gate_proj.weight, block.mlp.up_proj.weight]),  # (2F, D)
                    block.mlp.down_proj.weight.detach(),
                )
                for block in model.blocks
            ]
            self.norm, self.lm_head = model.norm.weight.detach(), model.lm_head.weight.detach()
            self.cos = model.rope_cos.detach()  # (S, E)
            # rotate_half(x) * sin == roll(x, E/2) * signed_sin (models/pointwise.py): one roll, no cat or neg
            self.signed_sin = model.rope_signed_sin.detach()  # (S, E)

    def _qkv_weight(self, attn: nn.Module) -> torch.Tensor:
        """q, k and v projections, then q and k again with each head's rows rolled by E/2: the one matmul also
        yields roll(q) and roll(k), so rotary needs no roll of its own (two operators fewer per layer in ONNX)."""
        E = self.head_dim

        def rolled(weight: torch.Tensor) -> torch.Tensor:  # (heads E, D), each head's rows rolled by E/2
            return weight.view(-1, E, weight.size(1)).roll(E // 2, dims=1).reshape(weight.shape)

        q, k, v = attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight
        return torch.cat([q, k, v, rolled(q), rolled(k)])

    def __call__(self, idx: torch.Tensor, cache: DecodeState, last_only: bool = True) -> torch.Tensor:
        B, T = idx.shape
        H, K, E = self.n_head, self.n_kv_head, self.head_dim
        # F.embedding rather than indexing: one Gather in the exported graph, not an Unsqueeze and a GatherND
        cos = F.embedding(cache.positions, self.cos)[:, :, None]  # (B, T, 1, E)
        sin = F.embedding(cache.positions, self.signed_sin)[:, :, None]  # (B, T, 1, E)
        x = F.embedding(idx, self.embed)  # (B, T, D)
        for layer, (attn_norm, qkv_weight, o_weight, mlp_norm, gate_up, down) in enumerate(self.layers):
            qkv = F.linear(F.rms_norm(x, (self.d_model,), attn_norm, self.eps), qkv_weight)
            qk, v, qk_rolled = qkv.view(B, T, 2 * H + 3 * K, E).split([H + K, K, H + K], dim=2)  # (B, T, ., E)
            q, k = (qk * cos + qk_rolled * sin).split([H, K], dim=2)  # rotary on q and k at once
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, E), (B, K, T, E) x 2
            k, v = cache.extend(layer, k, v)  # (B, K, P + T, E)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask, enable_gqa=H != K)  # (B, H, T, E)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, self.d_model), o_weight)
            gate, up = F.linear(F.rms_norm(x, (self.d_model,), mlp_norm, self.eps), gate_up).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, down)
        x = x[:, -1] if last_only else x  # (B, D) or (B, T, D)
        return F.linear(F.rms_norm(x, (self.d_model,), self.norm, self.eps), self.lm_head)  # (B, V) or (B, T, V)


class GPT2Step:
    def __init__(self, model: nn.Module):
        shape = model.shape
        self.n_head, self.head_dim, self.eps, self.d_model = shape.n_head, shape.head_dim, shape.norm_eps, shape.d_model
        with torch.no_grad():
            self.embed, self.positions = model.embed.weight.detach(), model.positions.weight.detach()
            self.layers = [
                tuple(
                    t.detach()
                    for t in (
                        block.ln_1.weight, block.ln_1.bias, block.attn.qkv.weight, block.attn.qkv.bias,
                        block.attn.proj.weight, block.attn.proj.bias, block.ln_2.weight, block.ln_2.bias,
                        block.mlp.fc.weight, block.mlp.fc.bias, block.mlp.proj.weight, block.mlp.proj.bias,
                    )
                )
                for block in model.blocks
            ]
            self.norm = (model.norm.weight.detach(), model.norm.bias.detach())
            self.lm_head = model.lm_head.weight.detach()

    def __call__(self, idx: torch.Tensor, cache: DecodeState, last_only: bool = True) -> torch.Tensor:
        B, T = idx.shape
        H, E, D = self.n_head, self.head_dim, self.d_model
        x = F.embedding(idx, self.embed) + F.embedding(cache.positions, self.positions)  # (B, T, D)
        for layer, (ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b) in enumerate(
            self.layers
        ):
            qkv = F.linear(F.layer_norm(x, (D,), ln1_w, ln1_b, self.eps), qkv_w, qkv_b)
            q, k, v = qkv.view(B, T, 3, H, E).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, E)
            k, v = cache.extend(layer, k, v)  # (B, H, P + T, E)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=cache.mask)  # (B, H, T, E)
            x = x + F.linear(y.transpose(1, 2).reshape(B, T, D), proj_w, proj_b)
            hidden = F.gelu(F.linear(F.layer_norm(x, (D,), ln2_w, ln2_b, self.eps), fc_w, fc_b), approximate="tanh")
            x = x + F.linear(hidden, out_w, out_b)
        x = x[:, -1] if last_only else x  # (B, D) or (B, T, D)
        return F.linear(F.layer_norm(x, (D,), *self.norm, self.eps), self.lm_head)  # (B, V) or (B, T, V)
