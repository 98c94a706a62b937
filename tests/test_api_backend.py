"""Served models (backends/api.py) against real `transformers serve` processes on loopback.

No mock of the client: the openai client talks HTTP to a real server, directly or through a small
loopback proxy that plays a busy server (429 + Retry-After), one that refuses `seed`, or one whose
answers end early without usage counts.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import pickle
import socket
import subprocess
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

import backends.api as api
from conftest import requests
from harness.api import evaluate
from harness.core.errors import HarnessError
from harness.core.run import read_run
from harness.core.schema import ModelInfo
from harness.models import resolve

STARTUP_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/v1/models"


class Server:
    """`transformers serve <model dir>` on a loopback port, started and stopped by the test."""

    def __init__(self, model: str, port: int, log: Path):
        self.model, self.port, self.log = model, port, log
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = ["transformers", "serve", self.model, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"transformers serve exited {self.proc.returncode}: {self.log.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(models_url(self.port), timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"transformers serve did not answer within {STARTUP_S}s: {self.log.read_text()[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def tiny_path(harness_cache) -> str:
    return resolve("tiny").path


@pytest.fixture(scope="module")
def server(tiny_path, tmp_path_factory):
    started = Server(tiny_path, free_port(), tmp_path_factory.mktemp("serve") / "serve.log").start()
    yield started
    started.stop()


@pytest.fixture
def fast_failures(monkeypatch):
    """Seconds, not minutes, when a server is gone: short timeouts, few retries."""
    monkeypatch.setattr(api, "TIMEOUT_S", 10.0)
    monkeypatch.setattr(api, "MAX_RETRIES", 0)


def served(server: Server, endpoint: str | None = None) -> ModelInfo:
    return ModelInfo(name="served", path=server.model, family="api", endpoint=endpoint or server.url)


def image(seed: int) -> Image.Image:
    """A distinct 48x48 picture per seed (stripes of seed-dependent colours)."""
    im = Image.new("RGB", (48, 48))
    pixels = [
        (x * 37 + seed * 91, y * 53 + seed * 17, x * y + seed * 7) for y in range(48) for x in range(48)
    ]
    im.putdata([(r % 256, g % 256, b % 256) for r, g, b in pixels])
    return im


IMAGE_PART = {"type": "image", "path": "/somewhere/a.png"}
MESSAGES = [{"role": "user", "content": [IMAGE_PART, {"type": "text", "text": "What is it?"}]}]


class Proxy:
    """A loopback HTTP proxy in front of a server: forwards requests and returns the upstream's status
    and body; optionally answers the first ``busy`` POSTs with 429 + Retry-After: 1, refuses bodies
    that carry ``seed`` with a 400, or rewrites the upstream's JSON answers."""

    def __init__(self, upstream_port: int, busy: int = 0, refuse_seed: bool = False, rewrite=None):
        self.upstream_port, self.busy = upstream_port, busy
        self.refuse_seed, self.rewrite = refuse_seed, rewrite
        self.statuses: list[int] = []
        self.posts: list[tuple[float, str, int]] = []  # (arrival, body digest, status answered)
        self.keys: list[str] = []  # the Authorization headers received
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                proxy.forward(self, None)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.forward(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def answer(
        self, handler, status: int, body: bytes, headers: dict[str, str], request: bytes | None
    ) -> None:
        with self.lock:
            self.statuses.append(status)
            if request is not None:
                self.posts.append((time.monotonic(), hashlib.sha256(request).hexdigest(), status))
        handler.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body)), "Connection": "close"}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)

    def forward(self, handler, body: bytes | None) -> None:
        with self.lock:
            self.keys.append(handler.headers.get("Authorization", ""))
        if body is not None:
            with self.lock:
                busy = self.busy > 0
                self.busy -= busy
            if busy:
                error = json.dumps({"error": {"message": "busy", "type": "rate_limit"}}).encode()
                headers = {"Retry-After": "1", "Content-Type": "application/json"}
                return self.answer(handler, 429, error, headers, body)
            if self.refuse_seed and "seed" in json.loads(body):
                error = json.dumps(
                    {"error": {"message": "unknown parameter: seed", "type": "invalid"}}
                ).encode()
                return self.answer(handler, 400, error, {"Content-Type": "application/json"}, body)
        skip = {"host", "connection", "content-length", "accept-encoding"}
        headers = {k: v for k, v in handler.headers.items() if k.lower() not in skip}
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            upstream.request(handler.command, handler.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        if self.rewrite is not None and body is not None and response.status == 200:
            data = json.dumps(self.rewrite(json.loads(data))).encode()
        content_type = response.getheader("Content-Type", "application/json")
        self.answer(handler, response.status, data, {"Content-Type": content_type}, body)


# ---- the generator on its own ----------------------------------------------------------------------


def test_render_is_sorted_json_with_image_placeholders(server):
    generator = api.load_generator(served(server))
    prompt = generator.render(MESSAGES)
    assert json.loads(prompt) == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}
    ]
    assert "/somewhere" not in prompt and prompt == json.dumps(json.loads(prompt), sort_keys=True)
    assert (generator.device, generator.dtype) == ("server", "server")
    assert generator.count_tokens("é$") == 3  # UTF-8 bytes: an upper bound for byte-level BPE


def test_answers_in_order_images_matter_and_concurrency_changes_nothing(server):
    """The generation loop's window (4 requests in flight, records as they finish) gives the answers
    one request at a time gives, each to its own sample."""
    from harness.generation import generate_records
    from tasks import get_task

    generator = api.load_generator(served(server))
    task = get_task("burberry")
    samples = task.load("synthetic", "test", limit=6).samples
    alone, _ = generate_records(task, generator, samples, batch_size=1, max_new_tokens=8)
    windowed, size = generate_records(task, generator, samples, batch_size=8, max_new_tokens=8, concurrency=4)
    assert [r.id for r in windowed] == [s.id for s in samples] and size == 1
    assert [r.output for r in windowed] == [r.output for r in alone]
    pictures = [image(0), image(1), image(0), image(2), image(3), image(1)]
    together = generator.generate(requests([MESSAGES] * len(pictures), [[p] for p in pictures], 8))
    texts = [a.text for a in together]
    assert texts[0] == texts[2] and texts[1] == texts[5]  # same image, same answer
    assert len({texts[0], texts[1], texts[3], texts[4]}) > 1  # the image reaches the model
    for answer in together:
        assert answer.stop == "length" and answer.n_tokens == 8  # finish_reason "length" at max_tokens
        assert answer.prompt_tokens and answer.prompt_tokens > 0  # the server's usage
        assert answer.latency_s is not None and 0 < answer.latency_s < 30


def test_a_request_needs_exactly_its_images():
    with pytest.raises(ValueError, match="show 1 images but 0 were given"):
        requests([MESSAGES], [[]], 4)
    with pytest.raises(ValueError, match="show 1 images but 2 were given"):
        requests([MESSAGES], [[image(0), image(1)]], 4)


def test_an_early_end_without_usage_and_a_refused_seed(server):
    def ended_early(answer: dict) -> dict:
        answer["choices"][0]["finish_reason"] = "stop"
        answer.pop("usage", None)
        return answer

    with Proxy(server.port, refuse_seed=True, rewrite=ended_early) as proxy:
        generator = api.load_generator(served(server, proxy.url))
        first, second = (generator.generate(requests([MESSAGES], [[image(0)]], 8))[0] for _ in range(2))
    assert (first.text, first.stop, first.n_tokens) == (second.text, second.stop, second.n_tokens)
    assert first.stop == "end" and first.prompt_tokens is None
    assert 0 < first.n_tokens <= 8  # counted client-side, never above the budget
    # The seed was refused once, then left out: the 400, its retry without seed, the second request.
    assert proxy.statuses == [400, 200, 200]


def test_the_key_comes_from_the_environment_and_stays_in_the_client(server, monkeypatch):
    key, fallback = f"sk-test-{uuid.uuid4().hex}", f"sk-openai-{uuid.uuid4().hex}"
    monkeypatch.setenv("HARNESS_API_KEY", key)
    monkeypatch.setenv("OPENAI_API_KEY", fallback)
    with Proxy(server.port) as proxy:
        generator = api.load_generator(served(server, proxy.url))
        generator.generate(requests([MESSAGES], [[image(0)]], 2))
        monkeypatch.delenv("HARNESS_API_KEY")
        api.server_identity(served(server, proxy.url))
        monkeypatch.delenv("OPENAI_API_KEY")
        api.server_identity(served(server, proxy.url))
    assert proxy.keys == [f"Bearer {key}", f"Bearer {fallback}", "Bearer EMPTY"]
    assert key not in repr(generator) and key not in repr(generator.info)
    with pytest.raises(TypeError):
        pickle.dumps(generator)


# ---- server identity -------------------------------------------------------------------------------


def test_server_identity_is_stable_and_names_what_is_served(server, fast_failures):
    info = served(server)
    revision = api.server_identity(info)
    assert revision == api.server_identity(info) and len(revision) == 16
    with pytest.raises(HarnessError, match="does not serve 'not-served'") as err:
        api.server_identity(info.model_copy(update={"path": "not-served"}))
    assert server.url in str(err.value) and repr(server.model) in str(err.value)


def test_an_unreachable_server_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv("HARNESS_API_RETRIES", "0")  # the environment overrides the module's defaults
    monkeypatch.setenv("HARNESS_API_TIMEOUT", "5")
    endpoint = f"http://127.0.0.1:{free_port()}/v1"
    info = ModelInfo(name="x", path="m", family="api", endpoint=endpoint)
    t0 = time.perf_counter()
    with pytest.raises(HarnessError, match="cannot reach") as err:
        api.server_identity(info)
    assert time.perf_counter() - t0 < 2  # no retries with backoff
    assert endpoint in str(err.value) and "\n" not in str(err.value)
    monkeypatch.setenv("HARNESS_API_RETRIES", "many")
    with pytest.raises(HarnessError, match="HARNESS_API_RETRIES"):
        api.server_identity(info)


# ---- through the runner ----------------------------------------------------------------------------

RUN = dict(task="burberry", data="synthetic", limit=12, max_new_tokens=8, device=None, quiet=True)


def model_name(server: Server, endpoint: str | None = None) -> str:
    return f"openai:{server.model}@{endpoint or server.url}"


def outputs(run_dir: Path) -> dict[str, str | None]:
    return {r.id: r.output for r in read_run(run_dir).records}


@pytest.mark.slow
def test_a_served_run_end_to_end(server, tmp_path, monkeypatch, capsys):
    key = f"sk-harness-{uuid.uuid4().hex}"
    monkeypatch.setenv("HARNESS_API_KEY", key)
    run_dir = evaluate(model=model_name(server), output_dir=tmp_path, concurrency=4, **RUN).path
    run = read_run(run_dir)
    assert run.metrics.status == "complete" and run.metrics.n == 12 and run.metrics.n_errors == 0
    for record in run.records:
        assert record.latency_s is not None and record.latency_s > 0
        assert record.n_tokens == 8 and record.stop == "length" and record.prompt_tokens > 0
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model"]["endpoint"] == server.url and config["model"]["path"] == server.model
    assert config["model"]["revision"] == api.server_identity(served(server))
    assert config["device"] == config["dtype"] == "server"

    def no_generator(*args, **kwargs):
        raise AssertionError("a finished run must not generate again")

    monkeypatch.setattr(api, "load_generator", no_generator)
    capsys.readouterr()
    assert (
        evaluate(model=model_name(server), output_dir=tmp_path, concurrency=4, **{**RUN, "quiet": False}).path
        == run_dir
    )
    assert "already finished" in capsys.readouterr().out
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_a_server_killed_mid_run_then_restarted_resumes_to_the_uninterrupted_result(
    server, tiny_path, tmp_path, monkeypatch, fast_failures
):
    reference = outputs(evaluate(model=model_name(server), output_dir=tmp_path / "reference", **RUN).path)
    second = Server(tiny_path, free_port(), tmp_path / "second.log").start()
    try:
        real = api.APIGenerator.generate
        calls = []

        def kill_after_the_first_answer(self, *args):
            calls.append(1)
            if len(calls) == 5:  # the window (4) refills only when an answer came back
                second.stop()  # 1 to 4 answers are in; the others fail while the server is down
            return real(self, *args)

        monkeypatch.setattr(api.APIGenerator, "generate", kill_after_the_first_answer)
        out = tmp_path / "killed"
        kwargs = dict(model=model_name(second), output_dir=out, batch_size=4, concurrency=4, **RUN)
        with pytest.raises(HarnessError, match="stopped after 8 generation errors in a row"):
            evaluate(**kwargs)
        (run_dir,) = [p.parent for p in out.glob("*/predictions.jsonl")]
        assert not (run_dir / "metrics.json").exists()  # no number was written as if nothing went wrong
        interrupted = read_run(run_dir).records
        assert 1 <= sum(r.error is None for r in interrupted) <= 4
        assert all(r.error.startswith("generation") for r in interrupted if r.error is not None)

        monkeypatch.setattr(api.APIGenerator, "generate", real)
        second.start()  # same port, same model: same identity, so the run resumes
        assert evaluate(**kwargs).path == run_dir
    finally:
        second.stop()
    run = read_run(run_dir)
    assert run.metrics.status == "complete" and run.metrics.n_errors == 0
    assert outputs(run_dir) == reference


@pytest.mark.slow
def test_a_burst_of_429s_is_waited_out(server, tmp_path, monkeypatch):
    monkeypatch.setattr(api, "MAX_RETRIES", 3)
    with Proxy(server.port, busy=3) as proxy:
        t0 = time.perf_counter()
        run_dir = evaluate(
            model=model_name(server, proxy.url), output_dir=tmp_path, concurrency=4, **RUN
        ).path
        elapsed = time.perf_counter() - t0
    run = read_run(run_dir)
    assert run.metrics.status == "complete" and run.metrics.n_errors == 0
    assert proxy.statuses.count(429) == 3
    assert elapsed >= 1.0
    # Each refused request was sent again (same body) only after the Retry-After: 1 it was given.
    refused = [(t, digest) for t, digest, status in proxy.posts if status == 429]
    for t, digest in refused:
        again = [t2 for t2, d2, status in proxy.posts if d2 == digest and t2 > t and status == 200]
        assert again and min(again) - t >= 0.95, (t, again)
