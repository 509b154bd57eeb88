"""Prompts in, token ids out: refused by length before any tokenizing, and tokenized off the event loop.

Tokenizing costs about 270 bytes of memory per prompt byte and holds the thread that runs it, so a prompt is
measured first: one whose UTF-8 bytes could not fit the model's context even if every token were the vocabulary's
longest is refused without being tokenized. The rest are tokenized (and chat templates rendered) on a pool of
`TOKENIZER_THREADS` threads: the event loop keeps answering `/health` and other clients meanwhile, and at most
that many prompts are in the tokenizer's memory at once.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.generate.chat import NoChatTemplate
from llmrecipe.serve.errors import ApiError

TOKENIZER_THREADS = 2


def longest_token_bytes(model: LoadedModel) -> int:
    """UTF-8 bytes of the longest token text; a token that ends inside a character decodes to U+FFFD (3 bytes),
    never fewer than its own bytes, so this stays an upper bound."""
    engine = model.engine
    return max(len(engine.decode([i]).encode()) for i in range(engine.tokenizer.get_vocab_size())) or 1


class PromptEncoder:
    def __init__(self, model: LoadedModel):
        self.model = model
        self.context = model.engine.context
        self.max_bytes = self.context * longest_token_bytes(model)
        """A prompt longer than this many UTF-8 bytes has more tokens than the context holds."""
        self.pool = ThreadPoolExecutor(TOKENIZER_THREADS, thread_name_prefix="llmrecipe-tokenize")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def completion(self, text: str) -> list[int]:
        self._check_length(text, "prompt")
        return self._checked(await self._run(self.model.engine.encode, text), "prompt")

    async def chat(self, messages: list[dict]) -> tuple[str, list[int]]:
        """The rendered chat prompt and its tokens."""
        self._check_length("".join(m["content"] for m in messages), "messages")
        try:
            text = await self._run(self.model.chat_prompt, messages)
        except NoChatTemplate as error:
            raise ApiError(400, str(error), param="model", code="no_chat_template") from None
        except ValueError as error:
            raise ApiError(400, str(error), param="messages", code="invalid_value") from None
        self._check_length(text, "messages")
        return text, self._checked(await self._run(self.model.engine.encode, text), "messages")

    async def _run(self, function, argument):
        return await asyncio.get_running_loop().run_in_executor(self.pool, function, argument)

    def _check_length(self, text: str, param: str) -> None:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.max_bytes:
            raise ApiError(400, f"{param} is {size} bytes: more tokens than the model's context of {self.context} "
                           f"can hold (at most {self.max_bytes} bytes could fit); shorten it", param=param,
                           code="context_length_exceeded")

    def _checked(self, prompt: list[int], param: str) -> list[int]:
        if not prompt:
            raise ApiError(400, f"{param} encodes to no tokens; give some text", param=param, code="invalid_value")
        if len(prompt) > self.context:
            raise ApiError(400, f"{param} is {len(prompt)} tokens, more than the model's context of {self.context}; "
                           "shorten it", param=param, code="context_length_exceeded")
        return prompt
