"""The door every request passes before any route sees it: the API key, then the body's size.

Both are checked on the raw ASGI messages, before FastAPI reads or parses a byte of the body: a request without
the key gets 401 at once (not a 400 about its JSON, and without the server reading a 100 MB upload first), and a
body past `max_body` gets 413 as soon as its Content-Length (or, for a chunked upload, its running size) says
so. The body that passes is at most `max_body` bytes, held once and handed on to the route unchanged.
"""

from __future__ import annotations

import hmac
import json

from llmrecipe.serve.errors import TYPES

OPEN_PATHS = frozenset({"/health", "/openapi.json"})
"""Answered without the API key: liveness probes, and the published schema (it holds no data)."""


class RequestGuard:
    def __init__(self, app, api_key: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.expected = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.expected is not None and scope["path"] not in OPEN_PATHS:
            # Constant time: the comparison gives no hint of how much of a guessed key was right.
            if not hmac.compare_digest(headers.get(b"authorization", b""), self.expected):
                return await refuse(send, 401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                                    "invalid_api_key", {"www-authenticate": "Bearer"})
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            return await refuse(send, 413, self._too_large(declared.decode(errors="replace")), "request_too_large")
        body, whole = await read_at_most(receive, self.max_body)
        if not whole:
            return await refuse(send, 413, self._too_large("more than that"), "request_too_large")
        await self.app(scope, replay(body, receive), send)

    def _too_large(self, size: str) -> str:
        return (f"the request body is {size} bytes; this server takes at most {self.max_body} "
                "(its --max-request-bytes); send a shorter prompt")


async def read_at_most(receive, limit: int) -> tuple[bytes, bool]:
    """The body's bytes, and False (with what was read so far) once it passes `limit`."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left before sending it all
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, receive):
    """A `receive` that gives the route the body already read, then the connection's own messages (the route
    learns of a client that hangs up from the `http.disconnect` that follows)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def next_message():
        return pending.pop() if pending else await receive()

    return next_message


async def refuse(send, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"error": {"message": message, "type": TYPES[status], "param": None, "code": code}}).encode()
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    # Connection: close, since the rest of a refused body is never read.
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})
