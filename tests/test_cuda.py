"""The GPU path: every attention path reaches a fused kernel, the loss is fused, and each task trains on CUDA
(compiled, bf16, LoRA, classification, FSDP2 in a group of one), and decoding runs there.

These run only where torch sees a GPU (tests/conftest.py skips them elsewhere); benchmarks/gpu_check.py runs them.
"""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from llmrecipe.models.attention import causal_attention, document_mask, masked_attention
from llmrecipe.training.device import prepare_device
from llmrecipe.training.loss import IGNORE, cross_entropy_sum
from llmrecipe.training.tasks.packed import PackedRows

pytestmark = pytest.mark.cuda

FUSED = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION")


def fused_only():
    """SDPA with its math fallback switched off: a path that cannot reach a fused kernel raises."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, name) for name in FUSED if hasattr(SDPBackend, name)])


def qkv(dtype: torch.dtype, heads: int = 8, kv_heads: int = 2, length: int = 128, grad: bool = False):
    generator = torch.Generator(device="cuda").manual_seed(0)
    make = lambda h: torch.randn(2, h, length, 64, device="cuda", dtype=dtype, generator=generator,  # noqa: E731
                                 requires_grad=grad)
    return make(heads), make(kv_heads), make(kv_heads)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_training_decoding_and_packed_attention_reach_fused_kernels(dtype):
    prepare_device("cuda", tf32=True)
    q, k, v = qkv(dtype, grad=True)
    documents = torch.tensor([[0] * 50 + [1] * 78, [0] * 128], device="cuda")
    valid = torch.ones(2, 128, dtype=torch.bool, device="cuda")
    valid[0, :5] = False  # a left-padded row, as batched decoding has
    with fused_only():
        causal_attention(q, k, v, 0.0).float().sum().backward()  # grouped-query causal training
        masked_attention(q, k, v, document_mask(documents)).float().sum().backward()  # packed SFT, eager
        with torch.no_grad():
            masked_attention(q[:, :, -1:], k, v, valid[:, None, None, :])  # a cached decoding step with padding
            masked_attention(q[:, :, -1:], k, v, None)  # batch 1's step, no mask


def test_packed_documents_under_compile_take_flex_attention_and_match_the_dense_mask():
    q, k, v = qkv(torch.bfloat16)
    documents = torch.tensor([[0] * 50 + [1] * 78, [0] * 100 + [-1] * 28], device="cuda")
    positions = torch.zeros_like(documents)

    def attend(q, k, v):
        return PackedRows(positions, documents).attend(0, q, k, v)

    dense = attend(q, k, v)  # eager: the dense mask
    flex = torch.compile(attend)(q, k, v)  # compiled: FlexAttention's block mask
    torch.testing.assert_close(flex.float(), dense.float(), atol=2e-2, rtol=2e-2)


def test_the_loss_is_fused_and_equals_the_reference_cross_entropy():
    generator = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(4096, 32000, device="cuda", dtype=torch.bfloat16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 32000, (4096,), device="cuda", generator=generator)
    targets[::7] = IGNORE
    ours = cross_entropy_sum(logits, targets)
    reference = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE, reduction="sum")
    torch.testing.assert_close(ours, reference)
    compiled = torch.compile(cross_entropy_sum)(logits, targets)  # inside a compiled graph, as the trainer runs it
    torch.testing.assert_close(compiled, reference, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_compiled_bf16_decoder_learns_on_cuda(tmp_path, arch):
    from tests.test_models import tiny_shape
    from tests.test_training import make_spec, train_once

    spec = make_spec(model=tiny_shape(arch), total_steps=40, device="cuda", precision="bf16", compile=True,
                     optim=make_spec().optim.model_copy(update={"lr": 1e-2}))
    _, summary = train_once(tmp_path, arch, spec)
    assert summary["best_val_loss"] < math.log(64) - 1.0


def test_sft_with_lora_trains_on_cuda(tmp_path):
    from tests.test_finetune import sft_once, tiny_sft_spec

    spec = tiny_sft_spec(device="cuda", precision="bf16", compile=True, total_steps=20,
                         lora={"rank": 4, "alpha": 8.0, "targets": ["q_proj", "v_proj"]})
    model, summary = sft_once(tmp_path, "lora", spec)  # the added tokens' rows train through masked gradients
    assert summary["best_val_loss"] < summary["base_val_loss"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_classification_trains_on_cuda(tmp_path):
    from llmrecipe.tokenizer.train import train_char
    from tests.test_classify import labelled_rows, train_tiny

    tokenizer = train_char(iter(row["text"] for row in labelled_rows(40)), vocab_size=300, min_frequency=1,
                           eot_token="<|endoftext|>")
    _, summary = train_tiny(tmp_path, "cuda", tokenizer, device="cuda", precision="bf16")
    assert summary["val_accuracy"] >= 0.9


def test_fsdp2_in_a_group_of_one_trains_on_cuda(tmp_path):
    import torch.distributed as dist

    from llmrecipe.training.distributed import init_process_group
    from tests.test_training import SHAPE, make_spec, train_once

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update({"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port)})
    init_process_group("cuda")
    try:
        spec = make_spec(model=SHAPE.model_copy(update={"dropout": 0.0}), total_steps=12, device="cuda",
                         precision="bf16", sharding="fsdp", compile=True, checkpoint_every=5)
        model, summary = train_once(tmp_path, "fsdp", spec)
        assert summary["steps"] == 12 and math.isfinite(summary["val_loss"])
        assert list((tmp_path / "fsdp" / "scratch" / "checkpoints").glob("step-*/state.json"))
    finally:
        dist.destroy_process_group()
        for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(name, None)


def test_the_decoding_engine_runs_on_cuda_and_agrees_with_the_cpu():
    import numpy as np

    from llmrecipe.generate.decoders import TorchDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams
    from tests.generate_helpers import lively_model, tiny_shape

    prepare_device("cuda", tf32=False)  # real fp32 on both sides: the greedy paths must agree token for token
    model = lively_model(tiny_shape())
    prompts = [[1, 2, 3, 4], [5, 6]]
    params = SamplingParams(max_tokens=12, temperature=0.0, seed=0)
    on_cpu = Engine(TorchDecoder(model)).generate(prompts, params)
    on_gpu = Engine(TorchDecoder(model.to("cuda"))).generate(prompts, params)
    assert [c.token_ids for c in on_gpu] == [c.token_ids for c in on_cpu]
    assert TorchDecoder(model).device.type == "cuda" and np.all([len(c.token_ids) == 12 for c in on_gpu])
