"""The decoding engine: the KV-cache path against full recomputation, batching, sampling settings, stops."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from llmrecipe.generate.cache import left_pad
from llmrecipe.generate.decoders import TorchDecoder
from llmrecipe.generate.engine import Engine
from llmrecipe.generate.sampling import SamplingParams, next_token, nucleus, penalize_repeats
from llmrecipe.generate.text import TextStream, byte_fallback_ids
from llmrecipe.tokenizer.train import train_bpe, train_char
from tests.generate_helpers import EOT, STYLES, TEXTS, lively_model, style_shape, tiny_shape

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)
PROMPTS = [[1, 2, 3], [5, 6, 7, 8, 9, 10, 11], [4]]


def greedy_without_cache(model: torch.nn.Module, prompt: list[int], count: int) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(count):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]


@pytest.mark.parametrize("style", STYLES)
def test_cached_logits_equal_full_recomputation_for_left_padded_rows(style):
    model = lively_model(style_shape(style))
    decoder = TorchDecoder(model)
    continuations = [[9, 8, 7, 6], [1, 1, 2, 3], [40, 41, 42, 43]]
    ids, valid, positions = left_pad(PROMPTS)
    logits, past = decoder.forward(ids, positions, valid, decoder.empty(3))
    for step in range(4):
        for row, prompt in enumerate(PROMPTS):
            with torch.no_grad():
                expected = model(torch.tensor([prompt + continuations[row][:step]]))[0, -1]  # (V,)
            torch.testing.assert_close(torch.from_numpy(logits[row]), expected, atol=1e-5, rtol=1e-5)
        new = np.array([[c[step]] for c in continuations])  # (B, 1)
        positions = np.array([[len(p) + step] for p in PROMPTS])
        valid = np.concatenate([valid, np.ones((3, 1), dtype=bool)], axis=1)
        logits, past = decoder.forward(new, positions, valid, past)


@pytest.mark.parametrize("style", STYLES)
def test_no_cache_path_is_unchanged_by_the_cache_argument(style):
    model = lively_model(style_shape(style))
    ids = np.array([[3, 1, 4, 1, 5, 9]])
    decoder = TorchDecoder(model)
    logits, _ = decoder.forward(ids, np.arange(6)[None], np.ones((1, 6), dtype=bool), decoder.empty(1))
    with torch.no_grad():
        expected = model(torch.from_numpy(ids))[0, -1]  # (V,)
        torch.testing.assert_close(torch.from_numpy(logits[0]), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("style", ["llama-gqa", "gpt2"])
def test_batched_greedy_equals_each_prompt_alone_and_uncached_decoding(style):
    model = lively_model(style_shape(style))
    engine = Engine(TorchDecoder(model))
    batched = engine.generate(PROMPTS, GREEDY)
    for prompt, completion in zip(PROMPTS, batched):
        assert completion.token_ids == greedy_without_cache(model, prompt, 12)
        assert completion.token_ids == engine.generate([prompt], GREEDY)[0].token_ids
        assert completion.finish_reason == "length" and completion.prompt_tokens == len(prompt)
    assert len({tuple(c.token_ids) for c in batched}) == 3  # the model is lively: rows really differ


def test_rows_finish_at_their_own_limits_and_at_the_context_length():
    engine = Engine(TorchDecoder(lively_model(tiny_shape(seq_len=16))))
    params = [SamplingParams(max_tokens=n, temperature=0.0) for n in (2, 40, 5)]
    lengths = [len(c.token_ids) for c in engine.generate(PROMPTS, params)]
    assert lengths == [2, 16 - 7, 5]
    with pytest.raises(ValueError, match="more than the model's context of 16"):
        engine.generate([list(range(17))], GREEDY)
    with pytest.raises(ValueError, match="empty"):
        engine.generate([[]], GREEDY)


def test_a_short_prompt_outliving_a_long_one_uses_more_cache_slots_than_the_context():
    model = lively_model(tiny_shape(seq_len=16))
    engine = Engine(TorchDecoder(model))
    prompts = [list(range(1, 13)), [7]]  # 12 slots of padding-aligned cache, then 15 more tokens for the short row
    batched = engine.generate(prompts, SamplingParams(max_tokens=40, temperature=0.0))
    assert [len(c.token_ids) for c in batched] == [4, 15]
    for prompt, completion in zip(prompts, batched):
        assert completion.token_ids == greedy_without_cache(model, prompt, len(completion.token_ids))


def test_the_decoding_step_gives_the_model_logits_in_place_in_the_cache():
    model = lively_model(style_shape("llama-gqa"))
    decoder = TorchDecoder(model)
    cache = decoder.empty(1, 8)
    ids = np.array([[3, 1, 4]])
    logits, present = decoder.forward(ids, np.arange(3)[None], np.ones((1, 3), dtype=bool), cache)
    assert present is cache and cache.length == 3 and cache.keys.shape[3] == 8  # written in place, no growth
    with torch.no_grad():
        expected = model(torch.from_numpy(ids))[0, -1]  # (V,)
        torch.testing.assert_close(torch.from_numpy(logits[0]), expected, atol=1e-5, rtol=1e-5)


def test_end_of_text_token_stops_a_row():
    model = lively_model(tiny_shape())
    first = greedy_without_cache(model, PROMPTS[1], 3)
    engine = Engine(TorchDecoder(model), eot_id=first[1])
    (completion,) = engine.generate([PROMPTS[1]], GREEDY)
    assert completion.token_ids == first[:2] and completion.finish_reason == "stop"


def test_seeded_sampling_repeats_and_settings_change_the_draws():
    engine = Engine(TorchDecoder(lively_model(tiny_shape())))
    hot = SamplingParams(max_tokens=20, temperature=1.5, seed=3)
    draws = [engine.generate([PROMPTS[0]], hot)[0].token_ids for _ in range(2)]
    assert draws[0] == draws[1]
    other_seed = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=20, temperature=1.5, seed=4))[0]
    assert other_seed.token_ids != draws[0]
    greedy = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=20, temperature=0.0))[0].token_ids
    for near_greedy in (dict(top_k=1), dict(top_p=1e-9), dict(temperature=1e-9)):
        params = SamplingParams(max_tokens=20, seed=5, **{"temperature": 1.5, **near_greedy})
        assert engine.generate([PROMPTS[0]], params)[0].token_ids == greedy


def test_top_k_and_vocabulary_bound_the_draws():
    engine = Engine(TorchDecoder(lively_model(tiny_shape())), vocab_size=10)
    drawn = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=30, temperature=3.0, seed=0))[0].token_ids
    assert max(drawn) < 10
    logits = np.array([0.0, 5.0, 4.0, -1.0], dtype=np.float32)
    picks = {next_token(logits, SamplingParams(top_k=2, temperature=5.0), torch.empty(0, dtype=torch.long),
                        torch.Generator().manual_seed(s)) for s in range(40)}
    assert picks == {1, 2}


def test_nucleus_keeps_the_smallest_set_reaching_top_p():
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert torch.allclose(nucleus(probs, 0.7), torch.tensor([0.0, 0.5, 0.3, 0.0]) / 0.8)
    assert torch.equal(nucleus(probs, 0.0), torch.tensor([0.0, 1.0, 0.0, 0.0]))  # the top token always stays


def test_repetition_penalty_lowers_seen_tokens_either_sign():
    logits = torch.tensor([2.0, -2.0, 1.0])
    penalized = penalize_repeats(logits, torch.tensor([0, 1, 1]), 2.0)
    assert torch.equal(penalized, torch.tensor([1.0, -4.0, 1.0])) and torch.equal(logits, torch.tensor([2.0, -2.0, 1.0]))
    model = lively_model(tiny_shape())
    engine = Engine(TorchDecoder(model))
    plain = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=12, temperature=0.0))[0].token_ids
    strict = engine.generate([PROMPTS[0]], SamplingParams(max_tokens=12, temperature=0.0, repetition_penalty=50.0))
    assert len(set(strict[0].token_ids)) > len(set(plain))


def letters(ids: list[int]) -> str:
    return "".join(chr(ord("a") + i) for i in ids)


def test_text_stream_holds_back_possible_stops_and_cuts_at_the_first():
    stream = TextStream(letters, ("cd", "xyz"))
    pieces = [stream.push(i) for i in (0, 1, 2, 3, 4)]
    assert pieces[:2] == [("a", False), ("b", False)]
    assert pieces[2] == ("", False)  # "c" may start "cd": held back
    assert pieces[3] == ("", True) and stream.text == "ab"  # the stop text itself is not returned
    stream = TextStream(letters, ("xyz",))
    assert [stream.push(i) for i in (23, 24, 1)] == [("", False), ("", False), ("xyb", False)]
    assert stream.flush() == ""


def test_text_stream_holds_back_a_partial_character():
    decoded = []

    def utf8(ids: list[int]) -> str:
        decoded.append(list(ids))
        return bytes(ids).decode("utf-8", errors="replace")

    stream = TextStream(utf8, ())
    assert stream.push(0xC3) == ("", False)  # first byte of é: nothing to show yet
    assert stream.push(0xA9) == ("é", False)
    assert [stream.push(b) for b in b"ok"] == [("o", False), ("k", False)]
    assert stream.flush() == "" and stream.text == "éok"
    assert decoded == [[0xC3], [0xC3, 0xA9], [ord("o")], [ord("k")]]  # each id decoded again only until a boundary


@pytest.mark.parametrize("train", [train_bpe, train_char])
def test_text_stream_decodes_what_decoding_the_whole_output_gives(train):
    tokenizer = train(TEXTS, vocab_size=320, min_frequency=2, eot_token=EOT)
    draw = random.Random(0)
    outputs = [tokenizer.encode(text).ids for text in TEXTS[:4]]
    outputs += [[draw.randrange(tokenizer.get_vocab_size()) for _ in range(40)] for _ in range(30)]  # bytes in any order

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=False)

    for ids in outputs:
        stream = TextStream(decode, (), byte_fallback_ids(tokenizer))
        shown = "".join(stream.push(i)[0] for i in ids) + stream.flush()
        assert shown == stream.text == decode(ids)


def test_streamed_deltas_add_up_to_the_completion_and_cancelled_rows_leave():
    model = lively_model(tiny_shape())
    engine = Engine(TorchDecoder(model))
    deltas = list(engine.stream(PROMPTS, GREEDY))
    assert [d.token_id for d in deltas if d.index == 1] == greedy_without_cache(model, PROMPTS[1], 12)
    assert [d.finish_reason for d in deltas if d.index == 0][-1] == "length"
    gone = list(engine.stream(PROMPTS, GREEDY, cancelled=lambda index: index == 2))
    assert sum(d.index == 2 for d in gone) == 1 and sum(d.index == 0 for d in gone) == 12
