"""The OpenAI-compatible server, driven by the official openai client on a free loopback port."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

from llmrecipe import api
from llmrecipe.serve.app import ServeSettings
from llmrecipe.serve.server import background_server as running_server
from tests.generate_helpers import lively_model, save_artifact, tiny_shape
from tests.serve_helpers import CHAT_TEMPLATE, slow_model, wait_until


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    return save_artifact(lively_model(tiny_shape(vocab_size=320, seq_len=64)), tmp_path_factory.mktemp("m") / "tiny",
                         CHAT_TEMPLATE)


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    log = tmp_path_factory.mktemp("log") / "serve-log.jsonl"
    settings = ServeSettings(model_name="tiny", log_path=log)
    with running_server(api.open_model(model_folder), settings) as url:
        yield url, log


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server[0]}/v1", api_key="unused", max_retries=0)


def test_openai_client_completions_chat_and_streams(client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    completion = client.completions.create(model="tiny", prompt="The quick", max_tokens=8, temperature=0)
    choice = completion.choices[0]
    assert choice.text and choice.finish_reason in ("stop", "length") and completion.id.startswith("cmpl-")
    assert completion.usage.completion_tokens <= 8 and completion.usage.prompt_tokens > 0
    again = client.completions.create(model="tiny", prompt="The quick", max_tokens=8, temperature=0)
    assert again.choices[0].text == choice.text  # greedy is deterministic

    streamed = client.completions.create(model="tiny", prompt="The quick", max_tokens=8, temperature=0, stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed) == choice.text

    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6,
                                          seed=1, temperature=0.9)
    assert chat.choices[0].message.role == "assistant" and chat.choices[0].message.content
    chunks = list(client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                                 max_tokens=6, seed=1, temperature=0.9, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason is not None
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat.choices[0].message.content


def test_bad_requests_get_openai_shaped_4xx(client, server):
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model="tiny", prompt="x", temperature=5)
    assert bad.value.body["param"] == "temperature" and bad.value.status_code == 400
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.completions.create(model="gpt-4", prompt="x")
    with pytest.raises(openai.BadRequestError, match="more than the model's context of 64"):
        client.completions.create(model="tiny", prompt="The quick brown fox " * 40)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="")

    url = server[0]
    raw = httpx.post(f"{url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 400 and raw.json()["error"]["message"] == "the request body is not valid JSON"
    wrong_type = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": "5"})
    assert wrong_type.status_code == 400 and wrong_type.json()["error"]["param"] == "max_tokens"
    whole_float = httpx.post(f"{url}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 2.0})
    assert whole_float.status_code == 200
    not_allowed = httpx.get(f"{url}/v1/completions")
    assert not_allowed.status_code == 405 and not_allowed.headers["allow"] == "POST"
    assert set(not_allowed.json()["error"]) == {"message", "type", "param", "code"}
    assert httpx.get(f"{url}/nowhere").json()["error"]["type"] == "not_found_error"


def test_health_metrics_and_feedback_log(client, server):
    url, log = server
    assert httpx.get(f"{url}/health").json()["status"] == "ok"
    completion = client.completions.create(model="tiny", prompt="To be", max_tokens=5, temperature=0)
    receipt = httpx.post(f"{url}/v1/feedback", json={"completion_id": completion.id, "rating": -1,
                                                     "correction": ", or not to be"}).json()
    assert receipt["completion_id"] == completion.id
    unknown = httpx.post(f"{url}/v1/feedback", json={"completion_id": "cmpl-nope", "rating": 1})
    assert unknown.status_code == 404
    records = [json.loads(line) for line in log.read_text().splitlines()]
    served = next(r for r in records if r["id"] == completion.id)
    assert served["text"] == "To be" + completion.choices[0].text and served["kind"] == "completion"
    feedback = next(r for r in records if r["id"] == receipt["id"])
    assert feedback["text"] == "To be, or not to be" and feedback["rating"] == -1
    metrics = httpx.get(f"{url}/metrics").text
    assert 'llmrecipe_requests_total{path="/v1/completions",status="200"}' in metrics
    assert 'llmrecipe_errors_total{path="/v1/feedback",status="404"}' in metrics
    assert "llmrecipe_request_seconds_bucket" in metrics
    tokens = [line for line in metrics.splitlines() if line.startswith("llmrecipe_generated_tokens_total")]
    assert float(tokens[0].split()[-1]) >= completion.usage.completion_tokens


def test_a_max_tokens_the_context_cannot_hold_is_counted(client, server):
    def capped() -> float:
        lines = httpx.get(f"{server[0]}/metrics").text.splitlines()
        return float(next(line for line in lines if line.startswith("llmrecipe_max_tokens_capped_total")).split()[-1])

    before = capped()
    client.completions.create(model="tiny", prompt="To be", max_tokens=4, temperature=0)
    assert capped() == before  # fits the context of 64
    answer = client.completions.create(model="tiny", prompt="To be", max_tokens=200, temperature=0)
    assert capped() == before + 1
    assert answer.usage.prompt_tokens + answer.usage.completion_tokens <= 64


def test_the_serving_log_is_a_data_source(server, tmp_path):
    log = server[1]
    (tmp_path / "recipe.toml").write_text(f"""
[run]
name = "retrain"
workdir = "work"
[steps.feedback]
kind = "data"
sources = [{{ path = "{log}", text_field = "text", id_field = "id", metadata = ["kind"] }}]
split = {{ val = 0.0, test = 0.0 }}
""")
    report = api.run(api.load(tmp_path / "recipe.toml"))
    assert [o.state for o in report.outcomes] == ["done"]


def test_api_key_is_required_when_set(model_folder):
    settings = ServeSettings(model_name="tiny", api_key="s3cret")
    with running_server(api.open_model(model_folder), settings) as url:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        assert httpx.get(f"{url}/v1/models").status_code == 401
        good = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert good.models.list().data[0].id == "tiny"


def test_full_queue_answers_429_and_a_hang_up_frees_the_slot(model_folder):
    settings = ServeSettings(model_name="tiny", capacity=1, max_batch=1)
    with running_server(slow_model(model_folder), settings) as url:
        busy = lambda: httpx.get(f"{url}/health").json()["queued"]
        body = {"model": "tiny", "prompt": "The", "max_tokens": 60, "stream": True, "stop": ["never"]}
        with httpx.Client(timeout=30) as streaming:
            with streaming.stream("POST", f"{url}/v1/completions", json=body) as response:
                assert response.status_code == 200
                lines = response.iter_lines()  # kept: a dropped iterator closes the connection
                next(lines)  # decoding has begun: the one slot is taken
                assert busy() == 1
                refused = httpx.post(f"{url}/v1/completions", json={**body, "stream": False})
                assert refused.status_code == 429 and refused.json()["error"]["type"] == "rate_limit_error"
            # The client hung up mid-stream (60 tokens take over a second): the slot comes back at once.
        assert wait_until(lambda: busy() == 0)
        assert httpx.post(f"{url}/v1/completions", json={**body, "stream": False, "max_tokens": 2}).status_code == 200


def test_concurrent_requests_are_batched_and_all_answered(model_folder):
    settings = ServeSettings(model_name="tiny", capacity=64, max_batch=8)
    with running_server(slow_model(model_folder), settings) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        results: list[str] = []

        def one(i: int) -> None:
            out = client.completions.create(model="tiny", prompt="The quick" if i % 2 else "To be", max_tokens=10,
                                            temperature=0, stop=["never"])
            results.append(out.choices[0].text)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(results) == 16 and len(set(results)) == 2  # batched rows give what each prompt gives alone
        steps = [l for l in httpx.get(f"{url}/metrics").text.splitlines() if l.startswith("llmrecipe_generated")]
        assert float(steps[0].split()[-1]) == 160


def test_serve_command_binds_loopback_and_reads_the_key_from_the_environment(model_folder, monkeypatch):
    from fastapi.testclient import TestClient

    from llmrecipe.cli import build_parser
    from llmrecipe.serve import server

    assert build_parser().parse_args(["serve", str(model_folder)]).host == "127.0.0.1"
    started = {}
    monkeypatch.setattr(server.uvicorn, "run", lambda app, **options: started.update(app=app, **options))
    monkeypatch.setenv(server.API_KEY_VARIABLE, "from-env")
    server.serve(api.open_model(model_folder), host="127.0.0.1", port=0, api_key=None, capacity=4, max_batch=2,
                 log_path=None)
    with TestClient(started["app"]) as client:
        assert client.get("/v1/models").status_code == 401
        assert client.get("/v1/models", headers={"Authorization": "Bearer from-env"}).json()["data"][0]["id"] == "tiny"
