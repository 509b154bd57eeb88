"""A slow model and a waiting helper shared by the server tests."""

from __future__ import annotations

import time

from llmrecipe import api
from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.generate.engine import Engine

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


class SlowDecoder:
    """A real decoder that takes `seconds` (20 ms) a step, so requests overlap long enough to observe the queue."""

    def __init__(self, decoder, seconds: float = 0.02):
        self.decoder, self.seconds = decoder, seconds
        self.seq_len, self.vocab_size = decoder.seq_len, decoder.vocab_size

    def empty(self, batch, slots):
        return self.decoder.empty(batch, slots)

    def forward(self, *args):
        time.sleep(self.seconds)
        return self.decoder.forward(*args)

    def select(self, past, rows):
        return self.decoder.select(past, rows)


def slow_model(folder, seconds_per_token: float = 0.02) -> LoadedModel:
    loaded = api.open_model(folder)
    engine = loaded.engine
    # No end-of-text id: rows run to max_tokens, so a test knows how long a request lasts.
    slow = Engine(SlowDecoder(engine.decoder, seconds_per_token), engine.tokenizer, None, engine.vocab_size)
    return LoadedModel(slow, loaded.folder, loaded.backend, loaded.chat_template)


def wait_until(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False
