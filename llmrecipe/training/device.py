"""Runtime checks of the device the plan chose, and the settings that make CPU runs reproducible."""

from __future__ import annotations

import torch

from llmrecipe.errors import StepError


def prepare_device(device: str) -> None:
    if device == "cuda" and not torch.cuda.is_available():
        raise StepError(
            "the plan chose CUDA (an NVIDIA driver is present) but this torch build cannot use it; "
            "set run.device = 'cpu' or install a CUDA build of torch"
        )
    if device == "cpu":
        # Compiled CPU kernels are bitwise reproducible only with this on; eager CPU costs nothing extra.
        torch.use_deterministic_algorithms(True)
    # fp32 stays real fp32 on CUDA too (no TF32): speed comes from bf16 autocast, which the plan shows.
