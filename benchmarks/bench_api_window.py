"""Served models keep the window full: ``--concurrency N`` requests in flight all the time, against the
old batch-at-a-time way (N requests sent together, the next N only when the slowest has answered).

An OpenAI-compatible stub server (its own process, no compute) answers every chat completion after
a latency drawn from a fixed value or a long-tailed (log-normal) distribution of the same mean. Both
ways evaluate the same synthetic test samples through the harness's own generation loop (requests,
parsing, scoring); the ideal throughput is concurrency / mean latency, and each way's share of it
is printed, all in one run:

    PYTHONPATH=. python benchmarks/bench_api_window.py [--concurrency 32] [--latency-ms 200] [--samples 320]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

ANSWER = "Product: Check Scarf, Category: SCARVES, Full Price: 450.0"


def serve(port: int, latency_s: float, tail: bool) -> None:
    """The stub: /v1/models and /v1/chat/completions, each answer held back by a drawn latency."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    rng = random.Random(0)
    sigma = 1.0  # log-normal with this sigma and mean latency_s: a long tail (p99 ~ 5x the mean)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.reply({"object": "list", "data": [{"id": "stub", "object": "model", "owned_by": "bench"}]})

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            wait = rng.lognormvariate(math.log(latency_s) - sigma**2 / 2, sigma) if tail else latency_s
            time.sleep(wait)
            self.reply({
                "id": "x", "object": "chat.completion", "created": 0, "model": "stub",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ANSWER}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            })  # fmt: skip

    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(latency_s: float, tail: bool) -> tuple[subprocess.Popen, str]:
    port = free_port()
    code = f"import sys; sys.path.insert(0, 'benchmarks'); import bench_api_window as b; b.serve({port}, {latency_s}, {tail})"
    server = subprocess.Popen([sys.executable, "-c", code])
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return server, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("the stub server did not start")


def batch_at_a_time(task, generator, samples, settings, concurrency: int) -> list:
    """The old way: ``concurrency`` requests together; the next ones when all of them answered."""
    from harness.generation import run_batch

    records = []
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        for i in range(0, len(samples), concurrency):
            chunk = samples[i : i + concurrency]
            records += [r for batch in pool.map(lambda s: run_batch(task, generator, [s], settings), chunk) for r in batch]  # fmt: skip
    return records


def measure(endpoint: str, samples: list, concurrency: int) -> dict:
    from backends.api import APIGenerator
    from harness.core.schema import ModelInfo
    from harness.generation import generate_records
    from tasks import get_task

    task = get_task("burberry")
    generator = APIGenerator(ModelInfo(name="stub", path="stub", family="api", endpoint=endpoint))
    settings = {"max_new_tokens": 64, "min_new_tokens": None}
    t0 = time.perf_counter()
    window, _ = generate_records(
        task, generator, samples, batch_size=1, max_new_tokens=64, concurrency=concurrency
    )
    t_window = time.perf_counter() - t0
    t0 = time.perf_counter()
    batched = batch_at_a_time(task, generator, samples, settings, concurrency)
    t_batched = time.perf_counter() - t0
    assert [r.output for r in window] == [r.output for r in batched] and all(r.error is None for r in window)
    latency = sum(r.latency_s for r in window) / len(window)
    ideal = concurrency / latency
    return {"mean latency s": latency, "ideal /s": ideal, "window /s": len(samples) / t_window,
            "batched /s": len(samples) / t_batched}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency-ms", type=float, default=200)
    parser.add_argument("--samples", type=int, default=320)
    args = parser.parse_args()
    from tasks import get_task

    test = get_task("burberry").load("synthetic", "test").samples
    samples = (test * math.ceil(args.samples / len(test)))[: args.samples]
    samples = [s.model_copy(update={"id": f"{s.id}-{i}"}) for i, s in enumerate(samples)]
    print(f"{len(samples)} requests, concurrency {args.concurrency}, mean latency {args.latency_ms:g} ms")
    print(
        f"{'latency':<12} {'ideal/s':>8} {'window/s':>9} {'share':>6} {'batched/s':>10} {'share':>6} {'window/batched':>15}"
    )
    for tail in (False, True):
        server, endpoint = start(args.latency_ms / 1000, tail)
        try:
            m = measure(endpoint, samples, args.concurrency)
        finally:
            server.kill()
        print(
            f"{'long-tailed' if tail else 'fixed':<12} {m['ideal /s']:>8.1f} {m['window /s']:>9.1f} "
            f"{m['window /s'] / m['ideal /s']:>6.2f} {m['batched /s']:>10.1f} {m['batched /s'] / m['ideal /s']:>6.2f} "
            f"{m['window /s'] / m['batched /s']:>14.2f}x"
        )


if __name__ == "__main__":
    main()
