"""The routes: /v1/models, /v1/completions, /v1/chat/completions (streamed or not), /v1/feedback, /health, /metrics.

No /docs or /redoc: FastAPI's pages load their scripts from a CDN, which a server on a closed network cannot reach
and a served page should not depend on. /openapi.json describes the API for any viewer or client generator.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse

from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.generate.engine import Delta
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.serve.batcher import Batcher, Job, QueueFull
from llmrecipe.serve.errors import ApiError, ClientGone, install_error_handlers
from llmrecipe.serve.feedback import ServeLog
from llmrecipe.serve.guard import OPEN_PATHS, RequestGuard
from llmrecipe.serve.metrics import Metrics, MetricsMiddleware
from llmrecipe.serve.prompts import PromptEncoder
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
    max_request_bytes: int = 1_048_576
    """Largest request body read (1 MiB: a prompt of about a quarter million tokens); a larger one is answered 413
    before it is read."""


ERRORS = {status: {"model": schemas.ErrorBody} for status in (400, 401, 404, 413, 429)}
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
    prompts = PromptEncoder(model)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        batcher.stop()
        prompts.close()

    app = FastAPI(title="llmrecipe", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.add_middleware(RequestGuard, api_key=settings.api_key, max_body=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # added last, so outermost: it counts refusals too
    install_error_handlers(app)
    app.openapi = lambda: openapi_without_422(app, bool(settings.api_key))
    created = int(time.time())

    @app.get("/health", response_model=schemas.Health)
    async def health() -> schemas.Health:
        return schemas.Health(model=settings.model_name, backend=model.backend, queued=batcher.busy)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
    async def models() -> schemas.ModelList:
        return schemas.ModelList(data=[schemas.ModelCard(id=settings.model_name, created=created)])

    @app.post("/v1/completions", response_model=schemas.CompletionResponse,
              responses={**ERRORS, **STREAMABLE})
    async def completions(body: schemas.CompletionRequest, request: Request):
        check_model(body.model, settings.model_name)
        text = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
        prompt = await prompts.completion(text)
        job = submit(batcher, prompt, sampling(body, model, len(prompt), metrics))
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        record = lambda output, reason: serve_log.completion(completion_id, settings.model_name, text, output, reason)
        if body.stream:
            return sse(completion_events(job, completion_id, settings.model_name, record))
        output, reason, count = await collect_unless_gone(job, request)
        record(output, reason)
        return schemas.CompletionResponse(
            id=completion_id, created=int(time.time()), model=settings.model_name,
            choices=[schemas.CompletionChoice(index=0, text=output, finish_reason=reason)],
            usage=usage(len(prompt), count),
        )

    @app.post("/v1/chat/completions", response_model=schemas.ChatResponse,
              responses={**ERRORS, **STREAMABLE})
    async def chat(body: schemas.ChatRequest, request: Request):
        check_model(body.model, settings.model_name)
        messages = [m.model_dump() for m in body.messages]
        text, prompt = await prompts.chat(messages)
        job = submit(batcher, prompt, sampling(body, model, len(prompt), metrics))
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        record = lambda output, reason: serve_log.completion(
            completion_id, settings.model_name, text, output, reason, messages)
        if body.stream:
            return sse(chat_events(job, completion_id, settings.model_name, record))
        output, reason, count = await collect_unless_gone(job, request)
        record(output, reason)
        return schemas.ChatResponse(
            id=completion_id, created=int(time.time()), model=settings.model_name,
            choices=[schemas.ChatChoice(index=0, message=schemas.AssistantMessage(content=output), finish_reason=reason)],
            usage=usage(len(prompt), count),
        )

    @app.post("/v1/feedback", response_model=schemas.FeedbackReceipt, responses=ERRORS)
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


def openapi_without_422(app: FastAPI, with_key: bool) -> dict:
    """FastAPI documents a 422 `{"detail": ...}` for every body; this server answers 400 in OpenAI's shape. With an
    API key, every route but the open ones says it needs the bearer token (the guard checks it)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for route, path in schema["paths"].items():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
                if with_key and route not in OPEN_PATHS:
                    operation["security"] = [{"bearer": []}]
                    operation.setdefault("responses", {})["401"] = {
                        "description": "Missing or wrong API key",
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
        if with_key:
            schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        app.openapi_schema = schema
    return app.openapi_schema


def check_model(asked: str, served: str) -> None:
    if asked != served:
        raise ApiError(404, f"the model {asked!r} does not exist; this server serves {served!r}", param="model",
                       code="model_not_found")


def sampling(body: schemas.Sampling, model: LoadedModel, prompt_tokens: int, metrics: Metrics) -> SamplingParams:
    """The request's sampling settings; a `max_tokens` the context cannot hold after the prompt is counted in
    `llmrecipe_max_tokens_capped` (the answer's finish_reason is then `length` at the context's end)."""
    if body.max_tokens is not None and body.max_tokens > model.engine.context - prompt_tokens:
        metrics.capped.inc()
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


async def collect_unless_gone(job: Job, request: Request) -> tuple[str, str, int]:
    """`collect`, given up (and the job's slot freed) the moment the client hangs up: without this a non-streaming
    request kept decoding for nobody until its last token."""
    collecting = asyncio.ensure_future(collect(job))
    watching = asyncio.ensure_future(until_disconnected(request))
    try:
        await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not collecting.done():
            collecting.cancel()  # its `deltas` cancels the job, and the decoder drops it at the next token
    if collecting.cancelled():
        raise ClientGone()
    return collecting.result()


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


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
