"""The server under hostile requests: huge bodies and prompts, long stop texts, requests without the key, and
clients that hang up. Each case once took the server (or every other client) down."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest

from llmrecipe import api
from llmrecipe.generate.artifact import LoadedModel
from llmrecipe.serve.app import ServeSettings
from llmrecipe.serve.server import background_server as running_server
from tests.generate_helpers import lively_model, save_artifact, tiny_shape
from tests.serve_helpers import CHAT_TEMPLATE, slow_model, wait_until

BODY = {"model": "tiny", "prompt": "The quick", "max_tokens": 4}


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_artifact(lively_model(tiny_shape(vocab_size=320, seq_len=64)), tmp_path_factory.mktemp("m") / "tiny",
                         CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def server(model_folder):
    with running_server(api.open_model(model_folder), ServeSettings(model_name="tiny", max_request_bytes=8192)) as url:
        yield url


def raw_request(url: str, head: str, body: bytes = b"", wait: float = 5.0) -> tuple[bytes, float]:
    """Send raw bytes (a head that may promise more body than follows) and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as connection:
        started = time.monotonic()
        connection.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        try:
            while chunk := connection.recv(65536):
                answer += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return answer, time.monotonic() - started


def test_a_body_over_the_limit_is_refused_413_before_it_is_read(server):
    big = {**BODY, "prompt": "x" * 10_000}
    answer = httpx.post(f"{server}/v1/completions", json=big)
    assert answer.status_code == 413 and answer.json()["error"]["code"] == "request_too_large"
    assert "at most 8192" in answer.json()["error"]["message"]

    def chunks():  # no Content-Length: the running size decides
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}'

    chunked = httpx.post(f"{server}/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    # A declared 100 MB body is answered at once, without waiting for (or reading) a byte of it.
    answer, seconds = raw_request(server, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                                          "\r\nContent-Length: 100000000")
    assert answer.startswith(b"HTTP/1.1 413") and seconds < 2
    assert httpx.post(f"{server}/v1/completions", json=BODY).status_code == 200


def test_a_prompt_too_long_for_the_context_is_refused_without_tokenizing(model_folder):
    model = api.open_model(model_folder)
    encoded: list[int] = []
    engine = model.engine
    original = engine.encode
    engine.encode = lambda text: encoded.append(len(text)) or original(text)
    with running_server(model, ServeSettings(model_name="tiny")) as url:
        limit = 64 * max(len(engine.decode([i]).encode()) for i in range(engine.tokenizer.get_vocab_size()))
        answer = httpx.post(f"{url}/v1/completions", json={**BODY, "prompt": "a" * (limit + 1)})
        assert answer.status_code == 400 and answer.json()["error"]["code"] == "context_length_exceeded"
        chat = httpx.post(f"{url}/v1/chat/completions", json={"model": "tiny", "messages": [
            {"role": "user", "content": "b" * (limit + 1)}]})
        assert chat.status_code == 400 and chat.json()["error"]["param"] == "messages"
        assert encoded == []
        assert httpx.post(f"{url}/v1/completions", json=BODY).status_code == 200 and encoded == [len("The quick")]


def test_tokenizing_does_not_block_the_event_loop(model_folder):
    model = api.open_model(model_folder)
    original = model.engine.encode
    model.engine.encode = lambda text: time.sleep(2.0) or original(text)  # a prompt that takes long to tokenize
    with running_server(model, ServeSettings(model_name="tiny")) as url:
        slow = threading.Thread(target=httpx.post, args=(f"{url}/v1/completions",), kwargs={"json": BODY, "timeout": 30})
        slow.start()
        time.sleep(0.3)
        started = time.monotonic()
        assert httpx.get(f"{url}/health").status_code == 200
        assert time.monotonic() - started < 1.0
        slow.join()


def test_without_the_key_the_answer_is_401_before_the_body_is_read(model_folder):
    settings = ServeSettings(model_name="tiny", api_key="s3cret")
    with running_server(api.open_model(model_folder), settings) as url:
        for body in (b"{not json", json.dumps(BODY).encode()):
            answer = httpx.post(f"{url}/v1/completions", content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"
        wrong = httpx.post(f"{url}/v1/completions", json=BODY, headers={"Authorization": "Bearer s3cre"})
        assert wrong.status_code == 401
        # A 100 MB upload without the key: refused at its head, before its body is sent.
        answer, seconds = raw_request(url, "POST /v1/completions HTTP/1.1\r\nHost: x\r\n"
                                           "Content-Type: application/json\r\nContent-Length: 100000000")
        assert answer.startswith(b"HTTP/1.1 401") and seconds < 2
        assert httpx.get(f"{url}/metrics").status_code == 401  # --api-key protects the metrics too
        keyed = {"Authorization": "Bearer s3cret"}
        assert "llmrecipe_requests_total" in httpx.get(f"{url}/metrics", headers=keyed).text
        assert httpx.post(f"{url}/v1/completions", json=BODY, headers=keyed).status_code == 200
        assert httpx.get(f"{url}/health").status_code == 200  # probes need no key
        schema = httpx.get(f"{url}/openapi.json").json()
        assert schema["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
        assert "security" not in schema["paths"]["/health"]["get"]


def test_no_docs_page_loads_scripts_from_a_cdn(server):
    for page in ("/docs", "/redoc"):
        assert httpx.get(f"{server}{page}").status_code == 404
    assert httpx.get(f"{server}/openapi.json").json()["info"]["title"] == "llmrecipe"


def test_stop_texts_are_capped_in_length_and_number(server):
    long = httpx.post(f"{server}/v1/completions", json={**BODY, "stop": "z" * 257})
    assert long.status_code == 400 and long.json()["error"]["param"].startswith("stop")
    many = httpx.post(f"{server}/v1/completions", json={**BODY, "stop": ["a", "b", "c", "d", "e"]})
    assert many.status_code == 400
    assert httpx.post(f"{server}/v1/completions", json={**BODY, "stop": ["z" * 256] * 4}).status_code == 200


def test_a_non_streaming_client_that_hangs_up_frees_its_slot(model_folder):
    model: LoadedModel = slow_model(model_folder, seconds_per_token=0.1)  # 60 tokens: 6 s of decoding
    with running_server(model, ServeSettings(model_name="tiny", capacity=1, max_batch=1)) as url:
        busy = lambda: httpx.get(f"{url}/health").json()["queued"]
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{url}/v1/completions", json={**BODY, "max_tokens": 60, "stop": ["never"]}, timeout=0.5)
        hung_up = time.monotonic()
        assert wait_until(lambda: busy() == 0, seconds=2.0)  # not 5.5 s later, when the 60 tokens would be done
        assert time.monotonic() - hung_up < 2.0
        assert httpx.post(f"{url}/v1/completions", json={**BODY, "max_tokens": 2}).status_code == 200
