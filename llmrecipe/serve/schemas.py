"""Request and response bodies in the shape of OpenAI's API (the fields this server honours)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict

MAX_STOPS = 4
MAX_STOP_CHARS = 256
"""Each stop text is looked for at every generated token, on the one decoder thread all clients share: a long one
would slow every client's decoding."""


def _integral_float(value: Any) -> Any:
    """JSON Schema's `integer` admits 5.0; strict ints would refuse it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def Int(**bounds: int) -> Any:
    """A strict JSON integer within `bounds` (ge, le), 5.0 included; bounds before the validator keep them in the
    published schema as `minimum`/`maximum`."""
    return Annotated[int, Strict(), Field(**bounds), BeforeValidator(_integral_float)]


StopText = Annotated[str, Field(max_length=MAX_STOP_CHARS)]


class Body(BaseModel):
    # Strict: "5" is not a number and "true" not a boolean, as the published schema says.
    model_config = ConfigDict(strict=True, extra="ignore")


class Sampling(Body):
    model: str
    max_tokens: Int(ge=1) | None = None
    """New tokens at most (default: up to the model's context)."""
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: Int(ge=1) | None = None
    """Not in OpenAI's API: keep the k likeliest tokens."""
    repetition_penalty: float = Field(default=1.0, ge=0.01, le=10.0)
    """Not in OpenAI's API: CTRL's penalty on tokens already seen (1 is none)."""
    n: Int(ge=1, le=1) = 1
    """Choices per request: this server returns one."""
    stop: StopText | Annotated[list[StopText], Field(max_length=MAX_STOPS)] | None = None
    """Up to four texts of up to 256 characters that end the output; they are not returned."""
    seed: Int(ge=-(2**53), le=2**53) | None = None
    """Within the integers a JSON number holds exactly (torch takes any 64-bit seed)."""
    stream: bool = False
    user: str | None = None

    def stops(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return tuple(s for s in stops if s)


class CompletionRequest(Sampling):
    prompt: Annotated[str, Field(min_length=1)] | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=1)]
    """A string, or a list holding exactly one string."""
    max_tokens: Int(ge=1) | None = 16


class Message(Body):
    role: Literal["system", "user", "assistant"]
    content: str


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)


class Feedback(Body):
    completion_id: str = Field(min_length=1, max_length=200)
    """The `id` of a completion this server returned."""
    rating: Int(ge=-1, le=1) | None = None
    """-1 bad, 0 neutral, 1 good."""
    correction: str | None = Field(default=None, max_length=100_000)
    """What the model should have written instead."""
    comment: str | None = Field(default=None, max_length=10_000)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]


class ChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "llmrecipe"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class FeedbackReceipt(BaseModel):
    id: str
    object: Literal["feedback"] = "feedback"
    completion_id: str


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    backend: str
    queued: int
    """Requests waiting or decoding."""


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


MAX_CLASSIFY_INPUTS = 256
"""Texts per /v1/classify request."""


class ClassifyRequest(Body):
    model: str
    input: str | Annotated[list[str], Field(min_length=1, max_length=MAX_CLASSIFY_INPUTS)]
    """A text, or a list of up to 256 texts."""

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ClassifyResult(BaseModel):
    index: int
    label: str
    confidence: float
    probabilities: dict[str, float]
    """Every label's probability."""
    text_cut: bool
    """The text was longer than the model's context and only its beginning was read."""


class ClassifyResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[ClassifyResult]


class EmbeddingRequest(ClassifyRequest):
    """OpenAI's embeddings request: `input` is a text or a list of texts (`encoding_format` is always floats)."""


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float]
    """Unit length: a dot product of two embeddings is their cosine similarity."""
    text_cut: bool
    """Not in OpenAI's API: the text was longer than the model's context and only its beginning was read."""


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[Embedding]
    usage: EmbeddingUsage
