"""Every architecture: parameter counts derived in the plan equal the built model's, decoders are causal,
each trains from a tiny recipe through the same trainer, and exports to ONNX matching torch."""

from __future__ import annotations

import math

import pytest
import torch

from llmrecipe.models import attention, pointwise
from llmrecipe.models.build import build_model
from llmrecipe.models.llama import model as llama
from llmrecipe.models.registry import FAMILIES
from llmrecipe.plan.derive import parameter_count
from llmrecipe.models.shape import ModelShape


def tiny_shape(arch: str, **changes) -> ModelShape:
    values = dict(arch=arch, n_layer=2, n_head=2, n_kv_head=1 if arch == "llama" else 2, d_model=32, head_dim=16,
                  ffn_hidden=0 if arch == "lstm" else 128, vocab_size=64, seq_len=16, dropout=0.0, rope_theta=1e4,
                  tie_embeddings=True, mask_token_id=60 if arch == "bert" else None)
    if arch == "t5":
        values.update(n_decoder_layer=3, target_len=6, sentinels=4, norm_eps=1e-6)
    values.update(changes)
    return ModelShape(**values)


@pytest.mark.parametrize("arch", sorted(FAMILIES))
@pytest.mark.parametrize("tie", [True, False])
def test_derived_parameter_count_equals_the_built_model(arch, tie):
    shape = tiny_shape(arch, tie_embeddings=tie)
    assert parameter_count(shape) == sum(p.numel() for p in build_model(shape).parameters())


@pytest.mark.parametrize("arch", ["llama", "gpt2", "lstm"])
def test_decoders_do_not_look_ahead(arch):
    torch.manual_seed(0)
    model = build_model(tiny_shape(arch)).eval()
    idx = torch.randint(0, 64, (2, 12))
    changed = idx.clone()
    changed[:, 8:] = (changed[:, 8:] + 1) % 64  # change only the future of position 7
    with torch.no_grad():
        assert torch.allclose(model(idx)[:, :8], model(changed)[:, :8], atol=1e-6)


def test_explicit_attention_equals_the_fused_kernel_and_serves_cpu_bf16_training(monkeypatch):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16, requires_grad=True) for _ in range(3))  # (B, H, T, E)
    fused = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    explicit = attention._explicit(q, k, v)
    assert torch.allclose(explicit, fused, atol=1e-6)
    for a, b in zip(torch.autograd.grad(explicit.square().sum(), (q, k, v)), torch.autograd.grad(fused.square().sum(), (q, k, v))):
        assert torch.allclose(a, b, atol=1e-5)
    taken = []
    monkeypatch.setattr(attention, "_explicit", lambda *args: taken.append(True) or fused)
    attention.causal_attention(q, k, v, 0.0)  # fp32: the fused kernel
    with torch.autocast("cpu", dtype=torch.bfloat16):
        attention.causal_attention(q, k, v, 0.1)  # dropout: the fused kernel
        attention.causal_attention(q, k, v, 0.0)
        with torch.no_grad():  # inference: the fused kernel
            attention.causal_attention(q, k, v, 0.0)
    assert taken == [True]




def test_grouped_query_attention_equals_attention_over_repeated_heads():
    torch.manual_seed(0)
    q = torch.randn(2, 4, 10, 8, requires_grad=True)  # (B, H, T, E)
    k, v = (torch.randn(2, 2, 10, 8, requires_grad=True) for _ in range(2))  # (B, K, T, E): 2 query heads each
    repeated = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1), is_causal=True)
    assert torch.allclose(attention.causal_attention(q, k, v, 0.0), repeated, atol=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the explicit formulation
        grouped = attention.causal_attention(q, k, v, 0.0)
    assert torch.allclose(grouped.float(), repeated, atol=3e-2)
    assert all(g is not None for g in torch.autograd.grad(grouped.float().sum(), (q, k, v)))

def test_rms_norm_equals_the_textbook_formulation_in_value_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(16, dtype=torch.float64, requires_grad=True)
    textbook = x * (x.square().mean(-1, keepdim=True) + 1e-5).rsqrt() * weight
    assert torch.allclose(pointwise.rms_norm(x, weight, 1e-5), textbook)
    assert torch.autograd.gradcheck(lambda x, w: pointwise.rms_norm(x, w, 1e-5), (x, weight))


def test_rotary_rotates_each_pair_of_halves_by_its_angle():
    torch.manual_seed(0)
    T, E = 7, 8
    cos, signed_sin = llama.rotary_tables(T, E, theta=10000.0)  # (T, E)
    x = torch.randn(2, 3, T, E, dtype=torch.float64)
    rotated = pointwise.rotary(x, cos.double(), signed_sin.double())
    angle = torch.outer(torch.arange(T, dtype=torch.float64), 10000.0 ** (-torch.arange(0, E, 2, dtype=torch.float64) / E))
    first, second = x[..., : E // 2], x[..., E // 2 :]  # pair i: (first[i], second[i])
    expected = torch.cat([first * angle.cos() - second * angle.sin(), first * angle.sin() + second * angle.cos()], -1)
    assert torch.allclose(rotated, expected, atol=1e-6)


def test_the_encoder_looks_both_ways():
    torch.manual_seed(0)
    model = build_model(tiny_shape("bert")).eval()
    idx = torch.randint(0, 60, (1, 12))
    changed = idx.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 60
    with torch.no_grad():
        assert not torch.allclose(model(idx)[:, 0], model(changed)[:, 0])


@pytest.mark.e2e
@pytest.mark.parametrize("arch", ["gpt2", "bert", "lstm"])
def test_architecture_trains_resumes_exactly_and_exports_to_onnx(tmp_path, arch):
    from llmrecipe.export.onnx import export_onnx, max_logit_difference
    from tests.test_training import Crash, CrashingReporter, as_bytes, make_spec, train_once

    spec = make_spec(model=tiny_shape(arch, dropout=0.1), total_steps=12)
    reference, summary = train_once(tmp_path, "straight", spec)
    assert summary["best_val_loss"] < math.log(64)  # already below uniform guessing
    with pytest.raises(Crash):
        train_once(tmp_path, "crashy", spec, CrashingReporter(after=7))
    resumed, _ = train_once(tmp_path, "crashy", spec)  # picks up at the step-5 checkpoint
    assert as_bytes(resumed) == as_bytes(reference)

    reference.eval()
    export_onnx(reference, tmp_path / "model.onnx", opset=18)
    assert max_logit_difference(reference, tmp_path / "model.onnx") < 1e-3


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_every_architecture_compiles_from_a_recipe(tmp_path, arch):
    from llmrecipe import api
    from tests.conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, edits=(("n_layer = 2, n_head = 2", f'arch = "{arch}", n_layer = 2, n_head = 2'),))
    plan = api.compile(api.load(recipe))
    base = next(step for step in plan.steps if step.name == "base")
    assert base.spec["model"]["arch"] == arch and base.derived["n_params"] > 0
