"""OpenAI-compatible HTTP server: FastAPI on uvicorn, one model, decoding on a worker thread.

schemas.py (request/response bodies) -> errors.py (OpenAI's error shape) -> batcher.py (bounded queue,
batched decoding off the event loop) -> metrics.py, feedback.py -> app.py (routes) -> server.py (uvicorn).
"""
