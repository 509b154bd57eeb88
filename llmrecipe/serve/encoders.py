"""Servers of models that read text rather than write it, behind the same key check, body limit, error shapes and
metrics as the text server, with /v1/models, /health and /metrics:
- a classify fine-tune: /v1/classify, labels and probabilities for texts;
- an encoder (`bert`) pretrain artifact: /v1/embeddings, OpenAI's shape, one unit-length vector per text.

Each model runs in a worker thread, one batch at a time, so the event loop keeps answering."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from fastapi import FastAPI
from fastapi.responses import Response

from llmrecipe.embed import TextEncoder
from llmrecipe.predict import TextClassifier
from llmrecipe.serve import schemas
from llmrecipe.serve.app import ServeSettings, check_model, openapi_without_422
from llmrecipe.serve.errors import ApiError, install_error_handlers
from llmrecipe.serve.guard import RequestGuard
from llmrecipe.serve.metrics import Metrics, MetricsMiddleware

ERRORS = {status: {"model": schemas.ErrorBody} for status in (400, 401, 404, 413)}


class ReaderApp:
    """The routes every reading model's server has, and a way to run the model off the event loop."""

    def __init__(self, settings: ServeSettings, route: str, title: str):
        self.settings, self.busy = settings, 0
        self.metrics = Metrics(lambda: self.busy, {"/health", "/metrics", "/v1/models", route})
        self.lock = threading.Lock()
        app = FastAPI(title=title, version="1", docs_url=None, redoc_url=None)
        app.add_middleware(RequestGuard, api_key=settings.api_key, max_body=settings.max_request_bytes)
        app.add_middleware(MetricsMiddleware, metrics=self.metrics)
        install_error_handlers(app)
        app.openapi = lambda: openapi_without_422(app, bool(settings.api_key))
        created = int(time.time())

        @app.get("/health", response_model=schemas.Health)
        async def health() -> schemas.Health:
            return schemas.Health(model=settings.model_name, backend="torch", queued=self.busy)

        @app.get("/metrics", response_class=Response,
                 responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
        async def prometheus() -> Response:
            return Response(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

        @app.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
        async def models() -> schemas.ModelList:
            return schemas.ModelList(data=[schemas.ModelCard(id=settings.model_name, created=created)])

        self.app = app

    async def run(self, model: str, work: Callable[[], object]):
        check_model(model, self.settings.model_name)

        def locked():
            with self.lock:
                return work()

        self.busy += 1
        try:
            return await asyncio.to_thread(locked)
        except ValueError as error:  # a text the model cannot read (e.g. no tokens)
            raise ApiError(400, str(error), param="input") from None
        finally:
            self.busy -= 1


def create_classifier_app(classifier: TextClassifier, settings: ServeSettings) -> FastAPI:
    reader = ReaderApp(settings, "/v1/classify", "llmrecipe classifier")

    @reader.app.post("/v1/classify", response_model=schemas.ClassifyResponse, responses=ERRORS)
    async def classify(body: schemas.ClassifyRequest) -> schemas.ClassifyResponse:
        found = await reader.run(body.model, lambda: classifier.predict(body.texts()))
        return schemas.ClassifyResponse(model=settings.model_name, data=[
            schemas.ClassifyResult(index=i, **prediction.as_dict()) for i, prediction in enumerate(found)])

    return reader.app


def create_embeddings_app(encoder: TextEncoder, settings: ServeSettings) -> FastAPI:
    reader = ReaderApp(settings, "/v1/embeddings", "llmrecipe embeddings")

    @reader.app.post("/v1/embeddings", response_model=schemas.EmbeddingResponse, responses=ERRORS)
    async def embeddings(body: schemas.EmbeddingRequest) -> schemas.EmbeddingResponse:
        vectors, tokens, cut = await reader.run(body.model, lambda: encoder.embed(body.texts()))
        return schemas.EmbeddingResponse(
            model=settings.model_name,
            data=[schemas.Embedding(index=i, embedding=vector, text_cut=c) for i, (vector, c) in enumerate(zip(vectors, cut))],
            usage=schemas.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))

    return reader.app
