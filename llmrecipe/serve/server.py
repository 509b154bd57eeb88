"""`llmrecipe serve`: uvicorn on loopback by default, the API key from --api-key or LLMRECIPE_API_KEY; and a
server in a background thread for tests and benchmarks."""

from __future__ import annotations

import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import uvicorn

from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.serve.app import ServeSettings, create_app

API_KEY_VARIABLE = "LLMRECIPE_API_KEY"


def serve(model: LoadedModel, *, host: str, port: int, api_key: str | None, capacity: int, max_batch: int,
          log_path: Path | None, model_name: str | None = None,
          max_request_bytes: int = ServeSettings.max_request_bytes) -> None:
    settings = ServeSettings(
        model_name=model_name or model.name, api_key=api_key or os.environ.get(API_KEY_VARIABLE) or None,
        capacity=capacity, max_batch=max_batch, log_path=log_path, max_request_bytes=max_request_bytes,
    )
    uvicorn.run(create_app(model, settings), host=host, port=port, log_level="info")


def serve_reader(folder: Path, *, classifier: bool, host: str, port: int, api_key: str | None, model_name: str,
                 max_request_bytes: int = ServeSettings.max_request_bytes) -> None:
    """A classify artifact behind /v1/classify, or an encoder's behind /v1/embeddings (llmrecipe/serve/encoders.py)."""
    from llmrecipe.serve import encoders

    settings = ServeSettings(model_name=model_name, api_key=api_key or os.environ.get(API_KEY_VARIABLE) or None,
                             max_request_bytes=max_request_bytes)
    if classifier:
        from llmrecipe.predict import TextClassifier

        app = encoders.create_classifier_app(TextClassifier(folder), settings)
    else:
        from llmrecipe.embed import TextEncoder

        app = encoders.create_embeddings_app(TextEncoder.load(folder), settings)
    uvicorn.run(app, host=host, port=port, log_level="info")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def background_server(model: LoadedModel, settings: ServeSettings) -> Iterator[str]:
    """A server on a free loopback port in a daemon thread: yields its base URL, stops it on exit."""
    with background_app(create_app(model, settings)) as url:
        yield url


@contextmanager
def background_app(app) -> Iterator[str]:
    """Any of our apps on a free loopback port in a daemon thread: yields its base URL, stops it on exit."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", backlog=2048)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="llmrecipe-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the background server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
