"""Tiny random Hugging Face checkpoints, made offline with transformers' own config classes and save_pretrained,
each with a byte-level BPE tokenizer trained by the tokenizers library: what the import tests read."""

from __future__ import annotations

import json
from pathlib import Path

WORDS = "the king walks to the castle and the queen sings of the sea while a soldier waits by the garden".split()
CHATML = ("{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

DECODER = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, vocab_size=320,
               max_position_embeddings=64)
CONFIGS = {
    "llama_gqa": ("LlamaConfig", "LlamaForCausalLM", {**DECODER, "num_key_value_heads": 2, "rope_theta": 5000.0}),
    "llama3_rope": ("LlamaConfig", "LlamaForCausalLM", {
        **DECODER, "num_key_value_heads": 2, "tie_word_embeddings": True, "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 16}}),
    "mistral": ("MistralConfig", "MistralForCausalLM", {**DECODER, "num_key_value_heads": 2, "sliding_window": None}),
    "qwen2_tied": ("Qwen2Config", "Qwen2ForCausalLM", {**DECODER, "num_key_value_heads": 2, "tie_word_embeddings": True}),
    "qwen2_untied": ("Qwen2Config", "Qwen2ForCausalLM", {**DECODER, "num_key_value_heads": 4, "tie_word_embeddings": False}),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", {**DECODER, "num_key_value_heads": 2, "head_dim": 32,
                                                   "tie_word_embeddings": True}),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=320,
                                                    resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "bert": ("BertConfig", "BertForMaskedLM", dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                   intermediate_size=96, vocab_size=320, max_position_embeddings=64,
                                                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
}
"""Checkpoint name -> (transformers config class, model class, config values)."""
SHARDED = "llama_gqa"
"""The checkpoint saved in several safetensors files with an index."""


def make_tokenizer(encoder: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    specials = ["[PAD]", "[CLS]", "[SEP]", "[MASK]"] if encoder else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4, trainer)
    if encoder:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                                                     ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    return tokenizer


def make_checkpoint(name: str, folder: Path, dtype: str = "float32", seed: int = 0) -> Path:
    """Save the named tiny checkpoint (random weights under `seed`) with its tokenizer into `folder`."""
    import torch
    import transformers

    config_class, model_class, values = CONFIGS[name]
    torch.manual_seed(seed)
    config = getattr(transformers, config_class)(**values)
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():  # norms and biases away from their 1/0 start, so a mapping mistake shows in the logits
        for param_name, param in model.named_parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.1)
    model = model.to(getattr(torch, dtype))
    folder.mkdir(parents=True, exist_ok=True)
    shard = "40KB" if name == SHARDED else "50MB"
    model.save_pretrained(str(folder), max_shard_size=shard)
    encoder = name == "bert"
    make_tokenizer(encoder).save(str(folder / "tokenizer.json"))
    tokenizer_config = ({"tokenizer_class": "PreTrainedTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]",
                         "pad_token": "[PAD]", "mask_token": "[MASK]"} if encoder else
                        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>",
                         "bos_token": "<|endoftext|>", "chat_template": CHATML})
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


def hf_logits(folder: Path, ids):
    """transformers' own logits for the checkpoint (fp32)."""
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    model_class = getattr(transformers, config["architectures"][0])
    model = model_class.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits
