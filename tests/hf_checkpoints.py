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
    # T5 v1.1: gated GELU, untied output; heads x d_kv (32) differs from d_model, as in t5-v1_1-small (6 x 64, 512)
    "t5": ("T5Config", "T5ForConditionalGeneration", dict(vocab_size=320, d_model=64, d_kv=8, d_ff=96, num_layers=2,
                                                          num_decoder_layers=3, num_heads=4, dropout_rate=0.0,
                                                          feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                                                          decoder_start_token_id=0)),  # as released configs say
}
"""Checkpoint name -> (transformers config class, model class, config values)."""
SHARDED = "llama_gqa"
"""The checkpoint saved in several safetensors files with an index."""
ENCODER_DECODERS = ("t5",)
SENTINELS = 10
"""`<extra_id_N>` tokens of the T5 checkpoint's tokenizer (a released one has 100), `<extra_id_0>` the top id."""
TOKENIZER_CONFIGS = {
    "encoder": {"tokenizer_class": "PreTrainedTokenizerFast", "cls_token": "[CLS]", "sep_token": "[SEP]",
                "pad_token": "[PAD]", "mask_token": "[MASK]"},
    "decoder": {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|im_end|>", "bos_token": "<|endoftext|>",
                "chat_template": CHATML},
    "seq2seq": {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "pad_token": "<pad>",
                "unk_token": "<unk>"},
}


def make_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    specials = {"encoder": ["[PAD]", "[CLS]", "[SEP]", "[MASK]"], "seq2seq": ["<pad>", "</s>", "<unk>"],
                "decoder": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]}[kind]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4, trainer)
    if kind == "seq2seq":  # T5's order: <extra_id_0> last, the highest id
        tokenizer.add_special_tokens([f"<extra_id_{i}>" for i in reversed(range(SENTINELS))])
    if kind == "encoder":
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
    if name == "t5":
        untie_t5(folder, seed)
    kind = "encoder" if name == "bert" else "seq2seq" if name in ENCODER_DECODERS else "decoder"
    make_tokenizer(kind).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(TOKENIZER_CONFIGS[kind]))
    return folder


def untie_t5(folder: Path, seed: int) -> None:
    """Make the saved T5 a v1.1 checkpoint as released: transformers 5 always ties T5's output to `shared` and saves
    no lm_head, where T5 v1.1 checkpoints carry their own lm_head.weight and say tie_word_embeddings = false (and
    may keep each stack's embed_tokens beside `shared`)."""
    import torch
    from safetensors.torch import load_file, save_file

    weights = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed + 1)
    shared = weights["shared.weight"]
    weights["lm_head.weight"] = torch.randn(shared.shape, generator=generator).to(shared.dtype)
    for stack in ("encoder", "decoder"):  # the copies of `shared` some checkpoints carry: read past on import
        weights[f"{stack}.embed_tokens.weight"] = shared.clone()
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.pop("scale_decoder_outputs", None)
    (folder / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": False}))


def hf_logits(folder: Path, ids, decoder_ids=None):
    """transformers' own logits for the checkpoint (fp32); an encoder-decoder's for encoder input `ids` and decoder
    input `decoder_ids`."""
    import torch
    import transformers

    config = json.loads((folder / "config.json").read_text())
    model_class = getattr(transformers, config["architectures"][0])
    model = model_class.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        if decoder_ids is not None:
            return model(input_ids=ids, decoder_input_ids=decoder_ids).logits
        return model(ids).logits
