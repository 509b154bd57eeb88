"""LoRA: what trains, merged equals unmerged, exact resume of adapter weights, and the plan's counts."""

from __future__ import annotations

import copy

import pytest
import torch

from llmrecipe.errors import RecipeError
from llmrecipe.models.build import build_model
from llmrecipe.models.lora import LoraLinear, apply_lora, lora_state_dict, merge_adapter_tensors, merge_lora
from llmrecipe.models.registry import FAMILIES
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.derive import lora_parameter_count
from llmrecipe.recipe.finetune import LoraConfig
from llmrecipe.training.checkpoint import model_tensors
from tests.test_finetune import SFT_STEP, compile_with, crash_and_resume, tiny_sft_spec


def shape_of(arch: str, **changes) -> ModelShape:
    values = dict(arch=arch, n_layer=2, n_head=4, n_kv_head=4, d_model=64, head_dim=16, ffn_hidden=192,
                  vocab_size=256, seq_len=32, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)
    return ModelShape(**{**values, **changes})


def randomized_adapters(model: torch.nn.Module) -> None:
    """B starts at zero (the adapter is a no-op); give it values so merging has something to fold in."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_lora_trains_under_5_percent_and_the_plan_counts_it_exactly(arch):
    torch.manual_seed(0)
    model = build_model(shape_of(arch))
    config = LoraConfig(rank=4, targets=list(FAMILIES[arch].lora_targets))
    trainable = apply_lora(model, config)
    total = sum(p.numel() for p in model.parameters())
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_parameter_count(shape_of(arch), config.targets, config.rank)
    assert trainable / total < 0.05
    assert all(name.rsplit(".", 1)[-1] in ("lora_A", "lora_B") for name, p in model.named_parameters() if p.requires_grad)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_fresh_adapter_changes_nothing_and_merged_logits_match_unmerged(arch):
    torch.manual_seed(0)
    model = build_model(shape_of(arch)).eval()
    ids = torch.randint(0, 256, (2, 32))
    before = model(ids)
    apply_lora(model, LoraConfig(rank=4, targets=[*list(FAMILIES[arch].lora_targets), "mlp.fc" if arch == "gpt2" else "up_proj"]))
    assert torch.equal(model(ids), before)  # B = 0: the wrapped model is the original
    randomized_adapters(model)
    unmerged = model(ids)
    assert (unmerged - before).abs().max() > 1e-3  # the adapters do something
    merged_model = merge_lora(copy.deepcopy(model))
    assert not any(isinstance(m, LoraLinear) for m in merged_model.modules())
    assert (merged_model(ids) - unmerged).abs().max() < 1e-4
    # The same merge from saved tensors alone (how a loader merges an unmerged artifact).
    plain = {k: v for k, v in model_tensors(model).items() if "lora_" not in k}
    fresh = build_model(shape_of(arch)).eval()
    fresh.load_state_dict(merge_adapter_tensors(plain, lora_state_dict(model), 16.0 / 4), strict=False)
    assert (fresh(ids) - unmerged).abs().max() < 1e-4


def test_state_dict_names_of_base_weights_do_not_change():
    model = build_model(shape_of("llama"))
    names = set(model.state_dict())
    apply_lora(model, LoraConfig(targets=["q_proj"]))
    assert names <= set(model.state_dict())
    assert set(lora_state_dict(model)) == {f"blocks.{i}.attn.q_proj.lora_{m}" for i in range(2) for m in "AB"}


@pytest.mark.e2e
def test_lora_sft_run_killed_midway_resumes_to_byte_identical_adapters(tmp_path):
    spec = tiny_sft_spec(lora=LoraConfig(rank=4, targets=["q_proj", "v_proj"]), total_steps=12, checkpoint_every=5)
    reference, resumed = crash_and_resume(tmp_path, spec, crash_after=7)
    ref_adapters = {k: v.numpy().tobytes() for k, v in lora_state_dict(reference).items()}
    assert ref_adapters == {k: v.numpy().tobytes() for k, v in lora_state_dict(resumed).items()}
    assert {k: v.numpy().tobytes() for k, v in model_tensors(reference).items()} == \
           {k: v.numpy().tobytes() for k, v in model_tensors(resumed).items()}


def test_plan_shows_lora_trainable_parameters(tmp_path):
    plan = compile_with(tmp_path, SFT_STEP + 'lora = { rank = 4, targets = ["q_proj", "v_proj"] }\n')
    derived = plan.step("chat").derived
    assert derived["trainable_fraction"] < 0.05
    assert derived["lora_targets"] == ["q_proj", "v_proj"]


@pytest.mark.parametrize("lora, message", [
    ('{ targets = ["qkv_proj"] }', "name no linear layer"),
    ('{ targets = ["lm_head"] }', "shares its weight with the embedding"),
])
def test_lora_targets_that_do_not_fit_the_model_are_recipe_errors(tmp_path, lora, message):
    with pytest.raises(RecipeError, match=message):
        compile_with(tmp_path, SFT_STEP + f"lora = {lora}\n")
