"""The server of a classify artifact: /v1/classify (labels and probabilities for texts), /v1/models, /health,
/metrics, behind the same key check, body limit, error shapes and metrics as the text server."""

from __future__ import annotations

import asyncio
import threading
import time

from fastapi import FastAPI
from fastapi.responses import Response

from llmrecipe.predict import TextClassifier
from llmrecipe.serve import schemas
from llmrecipe.serve.app import ServeSettings, check_model, openapi_without_422
from llmrecipe.serve.errors import install_error_handlers
from llmrecipe.serve.guard import RequestGuard
from llmrecipe.serve.metrics import Metrics, MetricsMiddleware

ERRORS = {status: {"model": schemas.ErrorBody} for status in (400, 401, 404, 413)}


def create_classifier_app(classifier: TextClassifier, settings: ServeSettings) -> FastAPI:
    busy = [0]
    metrics = Metrics(lambda: busy[0], {"/health", "/metrics", "/v1/models", "/v1/classify"})
    one_at_a_time = threading.Lock()  # the model runs in a worker thread, one batch at a time

    app = FastAPI(title="llmrecipe classifier", version="1", docs_url=None, redoc_url=None)
    app.add_middleware(RequestGuard, api_key=settings.api_key, max_body=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    install_error_handlers(app)
    app.openapi = lambda: openapi_without_422(app, bool(settings.api_key))
    created = int(time.time())

    def predict(texts: list[str]):
        with one_at_a_time:
            return classifier.predict(texts)

    @app.get("/health", response_model=schemas.Health)
    async def health() -> schemas.Health:
        return schemas.Health(model=settings.model_name, backend="torch", queued=busy[0])

    @app.get("/metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models", response_model=schemas.ModelList, responses=ERRORS)
    async def models() -> schemas.ModelList:
        return schemas.ModelList(data=[schemas.ModelCard(id=settings.model_name, created=created)])

    @app.post("/v1/classify", response_model=schemas.ClassifyResponse, responses=ERRORS)
    async def classify(body: schemas.ClassifyRequest) -> schemas.ClassifyResponse:
        check_model(body.model, settings.model_name)
        busy[0] += 1
        try:
            found = await asyncio.to_thread(predict, body.texts())  # off the event loop: other requests go on
        finally:
            busy[0] -= 1
        return schemas.ClassifyResponse(model=settings.model_name, data=[
            schemas.ClassifyResult(index=i, **prediction.as_dict()) for i, prediction in enumerate(found)])

    return app
