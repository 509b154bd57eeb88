"""A classify fine-tune for other runtimes, each checked against torch before it is stored.

ONNX: `model.onnx` maps `input_ids (batch, seq)` right-padded and `lengths (batch,)` to class `logits (batch,
classes)`, the texts encoded as the artifact encodes them (the marker token at the pooled end). Hugging Face: the
family's `*ForSequenceClassification` (decoders: LLaMA, GPT-2), whose bias-free head reads the state at the last
token that is not padding; the exported tokenizer appends the marker token itself and pads with a `<|pad|>` token
given an unused embedding row, so `model(**tokenizer(texts, padding=True))` gives our logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import save_file

from llmrecipe.errors import StepError
from llmrecipe.export.onnx import onnx_providers, quiet_exporter
from llmrecipe.models.classifier import Classifier, pad_right
from llmrecipe.models.registry import FAMILIES, family

PAD_TOKEN = "<|pad|>"
CHECK_ROWS = ((1, 3), (3, 7), (4, None))
"""(rows, longest length) of the random batches both runtimes score; None means the classifier's max_seq_len."""


class _Logits(torch.nn.Module):
    def __init__(self, model: Classifier):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids, lengths)  # (B, C)


def export_classifier_onnx(model: Classifier, path: Path, opset: int) -> list[Path]:
    ids, lengths = pad_right([[1, 2, 3], [4, 5]])  # (2, 3): two rows of different lengths, seq >= 2
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=model.max_seq_len)
    before = set(path.parent.iterdir())
    with quiet_exporter():
        torch.onnx.export(_Logits(model).eval(), (ids, lengths), str(path), input_names=["input_ids", "lengths"],
                          output_names=["logits"], opset_version=opset, dynamo=True, verbose=False,
                          dynamic_shapes={"input_ids": {0: batch, 1: seq}, "lengths": {0: batch}})
    return sorted(set(path.parent.iterdir()) - before)


def random_rows(model: Classifier, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded batches of random ids with lengths from 1 to the batch's longest."""
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for rows, longest in CHECK_ROWS:
        longest = longest or model.max_seq_len
        lengths = torch.randint(1, longest + 1, (rows,), generator=generator)
        lengths[0] = longest
        batches.append(pad_right([torch.randint(0, model.shape.vocab_size, (int(n),), generator=generator).tolist()
                                  for n in lengths]))
    return batches


@torch.no_grad()
def onnx_difference(model: Classifier, path: Path) -> float:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=onnx_providers())
    largest = 0.0
    for ids, lengths in random_rows(model):
        theirs = session.run(["logits"], {"input_ids": ids.numpy(), "lengths": lengths.numpy()})[0]
        largest = max(largest, float(np.abs(theirs - model.eval()(ids, lengths).numpy()).max()))
    return largest


def write_hf_classifier(model: Classifier, model_dir: Path, out_dir: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, processors

    arch = family(model.shape.arch)
    if arch.hf_sequence_classification is None or model.head_bias or model.pooling != "last":
        exported = sorted(name for name, f in FAMILIES.items() if f.hf_sequence_classification)
        raise StepError(f"a `{model.shape.arch}` classifier has no exact Hugging Face counterpart (its head pools "
                        f"'{model.pooling}'{' with a bias' if model.head_bias else ''}); format = \"onnx\" exports "
                        f"it, and format = \"hf\" exports classifiers of {exported}")
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    marker_id = json.loads((model_dir / "meta.json").read_text())["eot_id"]
    pad_id = tokenizer.get_vocab_size(with_added_tokens=True)
    if pad_id >= model.shape.vocab_size:
        raise StepError(f"the model has no unused embedding row for a padding token (vocabulary {pad_id}, rows "
                        f"{model.shape.vocab_size}); Hugging Face's head finds each text's end by its padding")
    tokenizer.add_special_tokens([AddedToken(PAD_TOKEN, special=True, normalized=False)])
    marker = tokenizer.id_to_token(marker_id)
    tokenizer.post_processor = processors.TemplateProcessing(single=f"$A {marker}", special_tokens=[(marker, marker_id)])
    tokenizer.save(str(out_dir / "tokenizer.json"))

    backbone = {name: t.detach().float() for name, t in model.backbone.state_dict().items()}
    tensors = arch.hf_tensors(backbone, model.shape.model_copy(update={"tie_embeddings": True}))  # no lm_head
    tensors["score.weight"] = model.score.weight.detach().float()
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    labels = dict(enumerate(model.labels))
    config = {**arch.hf_config(model.shape), "architectures": [arch.hf_sequence_classification],
              "num_labels": len(labels), "id2label": labels, "label2id": {v: k for k, v in labels.items()},
              "pad_token_id": pad_id, "eos_token_id": marker_id, "tie_word_embeddings": False}
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model.max_seq_len, "pad_token": PAD_TOKEN,
        "eos_token": marker, "padding_side": "right", "truncation_side": "right",
        "clean_up_tokenization_spaces": False}, indent=2))


@torch.no_grad()
def hf_difference(model: Classifier, folder: Path, texts: list[str]) -> float:
    """Largest |transformers - ours| logit difference: on random padded ids, and on `texts` run through the
    exported tokenizer (which must give our encoding)."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from llmrecipe.finetune.classify_data import encode

    transformers_logging.disable_progress_bar()
    theirs = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    pad_id = theirs.config.pad_token_id
    largest = 0.0
    for ids, lengths in random_rows(model):
        ids = ids.clamp(max=pad_id - 1)  # real tokens only, then padding
        padded = torch.where(torch.arange(ids.size(1)) < lengths[:, None], ids, pad_id)
        mask = (padded != pad_id).long()
        largest = max(largest, float((theirs(input_ids=padded, attention_mask=mask).logits
                                      - model.eval()(ids, lengths)).abs().max()))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=model.max_seq_len, return_tensors="pt")
    original = Tokenizer.from_file(str(folder / "tokenizer.json"))
    original.post_processor = None  # our encoding appends the marker itself
    rows, _ = encode(original, texts, model.max_seq_len, theirs.config.eos_token_id, "last")
    for i, row in enumerate(rows):
        if encoded["input_ids"][i, : len(row)].tolist() != row:
            raise StepError("the exported tokenizer encodes texts differently from the classifier; this is a bug in "
                            "the Hugging Face export of classifiers")
    ids, lengths = pad_right(rows)
    return max(largest, float((theirs(**encoded).logits - model(ids, lengths)).abs().max()))


def export_classifier(model: Classifier, model_dir: Path, out_dir: Path, fmt: str, opset: int, tolerance: float,
                      log: Callable[[str], None]) -> dict[str, Any]:
    """Write the format, compare it with torch, copy what loading it needs; the step's metrics."""
    if fmt == "onnx":
        written = export_classifier_onnx(model, out_dir / "model.onnx", opset)
        difference = onnx_difference(model, out_dir / "model.onnx")
        runtime = "onnxruntime"
        for name in ("tokenizer.json", "meta.json", "config.json"):
            shutil.copy(model_dir / name, out_dir / name)
        metrics: dict[str, Any] = {"onnx_bytes": sum(path.stat().st_size for path in written), "opset": opset}
    else:
        write_hf_classifier(model, model_dir, out_dir)
        metrics = {"format": "hf", "safetensors_bytes": (out_dir / "model.safetensors").stat().st_size}
        try:
            import transformers  # noqa: F401  (only to check the export)
        except ImportError:
            log("transformers is not installed: the folder was written but not loaded back to compare logits")
            return metrics
        difference = hf_difference(model, out_dir, ["a short text", "and a somewhat longer text than that"])
        runtime = "transformers"
    log(f"{runtime} vs torch: max |class logit difference| = {difference:.3g} (tolerance {tolerance:g})")
    if not difference <= tolerance:  # `not <=` also catches NaN
        raise StepError(f"{runtime}'s class logits differ from torch's by up to {difference:.3g}, more than "
                        f"tolerance = {tolerance:g}; raise tolerance if the difference is rounding")
    return metrics | {"max_abs_diff": difference, "classifier": True}
