"""The Hugging Face transformers layout: config.json, model.safetensors, tokenizer files, generation_config.json.

Each family maps its own names and config (models/*/__init__.py: LLaMA -> `LlamaForCausalLM`, GPT-2 ->
`GPT2LMHeadModel`); tied output weights are left out of the file, as transformers expects. When transformers is installed the folder is loaded back with
`from_pretrained` and its logits compared with ours.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import save_file

from llmrecipe.errors import StepError
from llmrecipe.generate.artifact import end_of_text_id, end_of_turn_id
from llmrecipe.generate.chat import find_chat_template
from llmrecipe.models.registry import FAMILIES, family


def write_hf_folder(model: torch.nn.Module, model_dir: Path, out_dir: Path) -> None:
    shape = model.shape
    arch = family(shape.arch)
    if arch.hf_export_architecture(shape) is None:
        exported = sorted(name for name, f in FAMILIES.items() if f.hf_architecture)
        raise StepError(f"a `{shape.arch}` model has no Hugging Face export here; export {exported} models, or "
                        "models imported from Hugging Face checkpoints")
    state = {name: tensor.detach().float() for name, tensor in model.state_dict().items()}
    tensors = arch.hf_tensors(state, shape)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    recorded = _recorded_tokens(model_dir)  # an imported model's own special tokens
    eot_id = tokenizer.token_to_id(recorded["bos_token"]) if "bos_token" in recorded else end_of_text_id(tokenizer)
    eot = tokenizer.id_to_token(eot_id) if eot_id is not None else None
    stop_id = end_of_turn_id(model_dir, tokenizer) or eot_id  # a chat model stops at the end of its turn
    stop = tokenizer.id_to_token(stop_id) if stop_id is not None else None
    ids = arch.hf_special_ids(eot_id, stop_id)
    if shape.decoder_start_id is not None:  # an imported encoder-decoder keeps the start it was trained with
        ids["decoder_start_token_id"] = shape.decoder_start_id
    (out_dir / "config.json").write_text(json.dumps({**arch.hf_config(shape), **ids}, indent=2))
    (out_dir / "generation_config.json").write_text(json.dumps({**ids, "max_length": shape.seq_len}, indent=2))
    shutil.copy(model_dir / "tokenizer.json", out_dir / "tokenizer.json")
    tokenizer_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": shape.seq_len,
                        **recorded, "bos_token": eot, "eos_token": stop, "clean_up_tokenization_spaces": False}
    template = find_chat_template(model_dir)
    if template is not None:
        tokenizer_config["chat_template"] = template
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps({"bos_token": eot, "eos_token": stop}, indent=2))


def _recorded_tokens(model_dir: Path) -> dict[str, str]:
    """The special tokens a model's tokenizer_config.json names (an import records its checkpoint's)."""
    path = model_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    roles = ("bos_token", "pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
    return {role: config[role] for role in roles if isinstance(config.get(role), str)}


@torch.no_grad()
def hf_logit_difference(model: torch.nn.Module, folder: Path, seed: int = 0) -> float:
    """Largest |transformers - ours| logit difference on random ids, the folder loaded offline."""
    import transformers
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar for loading a few tensors is noise in the step log
    arch = family(model.shape.arch)
    architecture = json.loads((folder / "config.json").read_text())["architectures"][0]
    # Decoders and encoder-decoders load through transformers' auto class, as other tools load them; an encoder
    # through the class its config names (BertModel or BertForMaskedLM).
    loader = getattr(transformers, arch.hf_auto_class if arch.causal or arch.encoder_decoder else architecture)
    theirs = loader.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch, length in ((1, 3), (2, model.shape.seq_len)):
        ids = torch.randint(0, model.shape.vocab_size, (batch, length), generator=generator)
        ours_args, their_kwargs = arch.example_inputs(ids)
        output = theirs(**their_kwargs)
        theirs_out = output.logits if hasattr(output, "logits") else output.last_hidden_state
        difference = (theirs_out - model(*ours_args)).abs().max()
        largest = max(largest, float(difference))
    return largest


def export_hf(model: torch.nn.Module, model_dir: Path, out_dir: Path, tolerance: float,
              log: Callable[[str], None]) -> dict[str, Any]:
    write_hf_folder(model, model_dir, out_dir)
    metrics: dict[str, Any] = {"format": "hf", "safetensors_bytes": (out_dir / "model.safetensors").stat().st_size}
    try:
        import transformers  # noqa: F401  (only to check the export; not needed to write it)
    except ImportError:
        log("transformers is not installed: the folder was written but not loaded back to compare logits")
        return metrics
    difference = hf_logit_difference(model, out_dir)
    log(f"transformers vs torch: max |logit difference| = {difference:.3g} (tolerance {tolerance:g})")
    if not difference <= tolerance:
        raise StepError(f"transformers' logits differ from ours by up to {difference:.3g}, more than tolerance = "
                        f"{tolerance:g}; this is a bug in the Hugging Face export of `{model.shape.arch}` models")
    return metrics | {"max_abs_diff": difference}
