"""Executor of `import`: a Hugging Face checkpoint made a model artifact, without copying its weights.

Writes config.json (our model shape), checkpoint.json (the checkpoint's folder, the dtype to hold the weights in,
and each weight file with its content digest), and the tokenizer as every model artifact has it: tokenizer.json,
meta.json, tokenizer_config.json (special tokens, chat template) and chat_template.jinja when it brings one.
Loaders read the weights from the referenced files (llmrecipe/checkpoints/load.py), checking their digests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from llmrecipe.checkpoints.headers import token_id, token_text, tokenizer_size
from llmrecipe.checkpoints.reference import REFERENCE, check_unchanged
from llmrecipe.errors import StepError
from llmrecipe.generate.chat import find_chat_template
from llmrecipe.plan.specs import ImportSpec
from llmrecipe.run.context import StepContext


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = ImportSpec.model_validate(raw_spec)
    folder = Path(spec.folder)
    files = [{"name": f.name, "sha256": f.sha256, "size": f.size} for f in ctx.external]
    check_unchanged(folder, files)
    weights = [f for f in files if f["name"].endswith(".safetensors")]
    (ctx.out_dir / "config.json").write_text(spec.model.model_dump_json(indent=2))
    (ctx.out_dir / REFERENCE).write_text(json.dumps({"folder": str(folder), "dtype": spec.dtype, "files": weights},
                                                    indent=2) + "\n")
    write_tokenizer(folder, spec, ctx.out_dir)
    referenced = sum(f["size"] for f in weights)
    ctx.log(f"{spec.model.hf_model_type} checkpoint of {referenced / 1e6:,.1f} MB referenced in {folder} "
            f"({len(weights)} file(s), held as {spec.dtype}); nothing copied")
    return {"referenced_bytes": referenced, "weight_files": len(weights), "copied_weight_bytes": 0}


def write_tokenizer(folder: Path, spec: ImportSpec, out: Path) -> None:
    """The checkpoint's tokenizer as our artifacts keep it, with its special tokens and chat template."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    # Padding and truncation saved in the file (sentence-transformers' pad every text to 128) would reach every
    # encoding; the steps pad and cut rows themselves.
    (out / "tokenizer.json").write_text(json.dumps({**tokenizer, "padding": None, "truncation": None}, ensure_ascii=False),
                                        encoding="utf-8")
    source_path = folder / "tokenizer_config.json"
    source = json.loads(source_path.read_text(encoding="utf-8")) if source_path.is_file() else {}
    eot_id = token_id(tokenizer, spec.eot_token) if spec.eot_token is not None else None
    if spec.eot_token is not None and eot_id is None:
        raise StepError(f"{folder}: the end token {spec.eot_token!r} named by its configs is not in tokenizer.json")
    meta = {"type": "hf", "vocab_size": tokenizer_size(tokenizer), "eot_id": eot_id}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": spec.model.seq_len,
              "clean_up_tokenization_spaces": False}
    for role in ("bos_token", "eos_token", "pad_token", "unk_token", "cls_token", "sep_token", "mask_token"):
        if token_text(source.get(role)) is not None:
            config[role] = token_text(source.get(role))
    if spec.model.hf_model_type != "bert" and spec.eot_token is not None:
        config["eos_token"] = spec.eot_token  # generation stops there (generation_config's eos, when it names one)
    template = find_chat_template(folder)
    if template is not None:
        config["chat_template"] = template
        (out / "chat_template.jinja").write_text(template, encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (folder / "generation_config.json").is_file():
        shutil.copy(folder / "generation_config.json", out / "generation_config.json")
