"""The routes: /v1/models, /v1/completions, /v1/chat/completions (streamed or not), /v1/feedback, /health, /metrics."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.generate.chat import NoChatTemplate
from llmrecipe.generate.engine import Delta
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.serve.batcher import Batcher, Job, QueueFull
from llmrecipe.serve.errors import ApiError, install_error_handlers
from llmrecipe.serve.feedback import ServeLog
from llmrecipe.serve.metrics import Metrics, MetricsMiddleware
from llmrecipe.serve import schemas


@dataclass(frozen=True)
class ServeSettings:
    model_name: str
    api_key: str | None = None
    capacity: int = 256
    """Requests waiting or decoding at once; one more is answered 429."""
    max_batch: int = 8
    """Requests decoded together in one batch."""
    log_path: Path | None = None
    """JSONL log of completions and feedback (None: not written)."""


ERRORS = {status: {"model": schemas.ErrorBody} for status in (400, 401, 404, 429)}
SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}}, "required": ["data"]}
STREAMABLE = {200: {"content": {"text/event-stream": {"schema": SSE_EVENT}}}}
"""With `stream: true` the answer is server-sent events; for OpenAPI 3.1 `schema` describes one event."""


def create_app(model: LoadedModel, settings: ServeSettings) -> FastAPI:
    batcher_ref: list[Batcher] = []
    metrics = Metrics(lambda: batcher_ref[0].busy if batcher_ref else 0,
                      {"/health", "/metrics", "/v1/models", "/v1/completions", "/v1/chat/completions", "/v1/feedback"})
    batcher = Batcher(model.engine, settings.capacity, settings.max_batch, metrics.tokens.inc)
    batcher_ref.append(batcher)
    serve_log = ServeLog(settings.log_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()

    app = FastAPI(title="llmrecipe", version="1", lifespan=lifespan)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.openapi = lambda: openapi_without_422(app)
    auth = [Depends(bearer_check(settings.api_key))] if settings.api_key else []
    created = int(time.time())

    @app.get("/health", response_model=schemas.Health)
    async def health() -> schemas.Health:
        return schemas.Health(model=settings.model_name, backend=model.backend, queued=batcher.busy)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=schemas.ModelList, dependencies=auth, responses=ERRORS)
    async def models() -> schemas.ModelList:
        return schemas.ModelList(data=[schemas.ModelCard(id=settings.model_name, created=created)])

    @app.post("/v1/completions", response_model=schemas.CompletionResponse, dependencies=auth,
              responses={**ERRORS, **STREAMABLE})
    async def completions(body: schemas.CompletionRequest):
        check_model(body.model, settings.model_name)
        text = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        prompt = encode_checked(model, text, "prompt")
        job = submit(batcher, prompt, sampling(body, model))
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        record = lambda output, reason: serve_log.completion(completion_id, settings.model_name, text, output, reason)
        if body.stream:
            return sse(completion_events(job, completion_id, settings.model_name, record))
        output, reason, count = await collect(job)
        record(output, reason)
        return schemas.CompletionResponse(
            id=completion_id, created=int(time.time()), model=settings.model_name,
            choices=[schemas.CompletionChoice(index=0, text=output, finish_reason=reason)],
            usage=usage(len(prompt), count),
        )

    @app.post("/v1/chat/completions", response_model=schemas.ChatResponse, dependencies=auth,
              responses={**ERRORS, **STREAMABLE})
    async def chat(body: schemas.ChatRequest):
        check_model(body.model, settings.model_name)
        messages = [m.model_dump() for m in body.messages]
        try:
            text = model.chat_prompt(messages)
        except NoChatTemplate as error:
            raise ApiError(400, str(error), param="model", code="no_chat_template") from None
        except ValueError as error:
            raise ApiError(400, str(error), param="messages", code="invalid_value") from None
        prompt = encode_checked(model, text, "messages")
        job = submit(batcher, prompt, sampling(body, model))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        record = lambda output, reason: serve_log.completion(
            completion_id, settings.model_name, text, output, reason, messages)
        if body.stream:
            return sse(chat_events(job, completion_id, settings.model_name, record))
        output, reason, count = await collect(job)
        record(output, reason)
        return schemas.ChatResponse(
            id=completion_id, created=int(time.time()), model=settings.model_name,
            choices=[schemas.ChatChoice(index=0, message=schemas.AssistantMessage(content=output), finish_reason=reason)],
            usage=usage(len(prompt), count),
        )

    @app.post("/v1/feedback", response_model=schemas.FeedbackReceipt, dependencies=auth, responses=ERRORS)
    async def feedback(body: schemas.Feedback) -> schemas.FeedbackReceipt:
        if not serve_log.knows(body.completion_id):
            raise ApiError(404, f"no completion with id {body.completion_id!r} was served by this server",
                           param="completion_id", code="completion_not_found")
        if body.rating is None and body.correction is None:
            raise ApiError(400, "give a rating (-1, 0 or 1), a correction, or both", param="rating",
                           code="invalid_value")
        feedback_id = serve_log.feedback(body.completion_id, body.rating, body.correction, body.comment)
        return schemas.FeedbackReceipt(id=feedback_id, completion_id=body.completion_id)

    return app


def openapi_without_422(app: FastAPI) -> dict:
    """FastAPI documents a 422 `{"detail": ...}` for every body; this server answers 400 in OpenAI's shape."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema["paths"].values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def bearer_check(api_key: str):
    scheme = HTTPBearer(auto_error=False)
    expected = api_key.encode()

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not hmac.compare_digest(given, expected):  # constant time: no timing hint about the key
            raise ApiError(401, "missing or wrong API key: send `Authorization: Bearer <key>`", code="invalid_api_key")

    return check


def check_model(asked: str, served: str) -> None:
    if asked != served:
        raise ApiError(404, f"the model {asked!r} does not exist; this server serves {served!r}", param="model",
                       code="model_not_found")


def encode_checked(model: LoadedModel, text: str, param: str) -> list[int]:
    engine = model.engine
    prompt = engine.encode(text)
    if not prompt:
        raise ApiError(400, f"{param} encodes to no tokens; give some text", param=param, code="invalid_value")
    if len(prompt) > engine.context:
        raise ApiError(400, f"{param} is {len(prompt)} tokens, more than the model's context of {engine.context}; "
                       "shorten it", param=param, code="context_length_exceeded")
    return prompt


def sampling(body: schemas.Sampling, model: LoadedModel) -> SamplingParams:
    return SamplingParams(
        max_tokens=body.max_tokens or model.engine.context, temperature=body.temperature, top_k=body.top_k,
        top_p=body.top_p, repetition_penalty=body.repetition_penalty, stop=body.stops(), seed=body.seed,
    )


def submit(batcher: Batcher, prompt: list[int], params: SamplingParams) -> Job:
    job = Job(prompt, params, asyncio.get_running_loop())
    try:
        batcher.submit(job)
    except QueueFull as error:
        raise ApiError(429, str(error), code="queue_full") from None
    return job


async def deltas(job: Job) -> AsyncIterator[Delta]:
    """The job's deltas as they come; the job is cancelled if the consumer stops early (client gone)."""
    try:
        while (item := await job.deltas.get()) is not None:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        job.cancel()


async def collect(job: Job) -> tuple[str, str, int]:
    text, reason, count = [], "length", 0
    async for delta in deltas(job):
        text.append(delta.text)
        count += 1
        reason = delta.finish_reason or reason
    return "".join(text), reason, count


def usage(prompt_tokens: int, completion_tokens: int) -> schemas.Usage:
    return schemas.Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                         total_tokens=prompt_tokens + completion_tokens)


def sse(events: AsyncIterator[dict]) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        async for event in events:
            yield f"data: {json.dumps(event, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def completion_events(job: Job, completion_id: str, model: str, record) -> AsyncIterator[dict]:
    created, text = int(time.time()), []
    base = {"id": completion_id, "object": "text_completion", "created": created, "model": model}
    try:
        async for delta in deltas(job):
            text.append(delta.text)
            yield {**base, "choices": [{"index": 0, "text": delta.text, "finish_reason": delta.finish_reason,
                                        "logprobs": None}]}
            if delta.finish_reason:
                record("".join(text), delta.finish_reason)
    except Exception as error:  # decoding failed mid-stream: the status line is gone, so say it in an event
        yield {"error": {"message": f"generation failed: {error}", "type": "server_error", "param": None, "code": None}}


async def chat_events(job: Job, completion_id: str, model: str, record) -> AsyncIterator[dict]:
    created, text = int(time.time()), []
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model}
    yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    try:
        async for delta in deltas(job):
            text.append(delta.text)
            if delta.text:
                yield {**base, "choices": [{"index": 0, "delta": {"content": delta.text}, "finish_reason": None}]}
            if delta.finish_reason:
                record("".join(text), delta.finish_reason)
                yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": delta.finish_reason}]}
    except Exception as error:
        yield {"error": {"message": f"generation failed: {error}", "type": "server_error", "param": None, "code": None}}
