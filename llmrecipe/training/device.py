"""Runtime checks of the device the plan chose, and the settings that make CPU runs reproducible."""

from __future__ import annotations

import torch

from llmrecipe.errors import StepError


def prepare_device(device: str, tf32: bool = False) -> None:
    """Check the device, and set what makes it reproducible (CPU) or fast (`tf32`: fp32 matmuls on CUDA in
    TensorFloat-32, for evaluation and generation, where the last bits of fp32 buy nothing)."""
    if device == "cuda" and not torch.cuda.is_available():
        raise StepError(
            "the plan chose CUDA (an NVIDIA driver is present) but this torch build cannot use it; "
            "set run.device = 'cpu' or install a CUDA build of torch"
        )
    if device == "cpu":
        # Compiled CPU kernels are bitwise reproducible only with this on; eager CPU costs nothing extra.
        torch.use_deterministic_algorithms(True)
    if device == "cuda":
        # Training keeps real fp32 where the recipe asks for it (its speed comes from bf16 autocast, which the plan
        # shows); scoring and decoding take TF32.
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
