"""Served-model evaluation speed: ``--concurrency 1`` vs ``--concurrency 8`` against ``transformers serve``.

Starts ``transformers serve`` with the tiny model on a loopback port, evaluates the synthetic Burberry
test split through ``harness.evaluate`` twice (batch size 8, fresh output directories), prints the samples/s
of each and the ratio, and asserts identical outputs.

``transformers serve`` generates for an image-text model one request at a time (its continuous
batching is for text-only models: it logs "does not support continuous batching. Falling back to
sequential generation"), so on loopback the ratio only shows what the client overlaps (its own PNG
encoding and HTTP work). ``--latency-ms`` puts a loopback proxy in front of the server that holds each
answer back that long, as a remote server's network round trip would: the waits overlap when several
requests are in flight, and the ratio shows it.

    PYTHONPATH=. python benchmarks/bench_api.py [--limit N] [--max-new-tokens 48] [--latency-ms 50]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench_eval import cpu_model  # benchmarks/ is on sys.path when a script of it runs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, threads: int, log: Path, wait_s: float = 60) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    command = ["transformers", "serve", model, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"transformers serve exited {server.returncode}: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                return server
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit(f"transformers serve did not answer within {wait_s:.0f}s: {log.read_text()[-2000:]}")


def delaying_proxy(upstream_port: int, delay_s: float) -> ThreadingHTTPServer:
    """A loopback proxy that forwards to ``upstream_port`` and holds each answer back ``delay_s``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def forward(self, body: bytes | None) -> None:
            skip = {"host", "connection", "content-length", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            upstream = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=120)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            time.sleep(delay_s)
            self.send_response(response.status)
            self.send_header("Content-Type", response.getheader("Content-Type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.forward(None)

        def do_POST(self):
            self.forward(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="default: the whole test split")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--concurrency", type=int, default=8, help="compared with 1")
    parser.add_argument("--server-threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    parser.add_argument(
        "--latency-ms", type=float, default=0, help="simulated network round trip per request"
    )
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HARNESS_CACHE", tempfile.mkdtemp(prefix="bench-api-cache-"))
    from harness.api import evaluate
    from harness.models import resolve

    model = resolve("tiny").path
    port = free_port()
    proxy = None
    with tempfile.TemporaryDirectory() as out:
        server = start_server(model, port, args.server_threads, Path(out) / "serve.log")
        try:
            if args.latency_ms > 0:
                proxy = delaying_proxy(port, args.latency_ms / 1000)
                port = proxy.server_address[1]
            kwargs = dict(
                task="burberry", model=f"openai:{model}@http://127.0.0.1:{port}/v1", data="synthetic",
                limit=args.limit, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, quiet=True,
            )  # fmt: skip
            evaluate(**{**kwargs, "limit": 8}, output_dir=Path(out) / "warm-up", concurrency=args.concurrency)
            timings, results = {}, {}
            for concurrency in (1, args.concurrency):
                t0 = time.perf_counter()
                run = evaluate(**kwargs, output_dir=Path(out) / f"c{concurrency}", concurrency=concurrency)
                timings[concurrency] = time.perf_counter() - t0
                assert run.metrics.status == "complete" and run.metrics.n_errors == 0, run.metrics.reason
                results[concurrency] = {r.id: (r.output, r.n_tokens, r.stop) for r in run.records}
        finally:
            if proxy is not None:
                proxy.shutdown()
            server.kill()
            server.wait()
    assert results[1] == results[args.concurrency], "outputs differ between concurrency levels"

    n = len(results[1])
    print(f"\nmachine: {os.cpu_count()} CPUs, {cpu_model()}; server OMP threads: {args.server_threads}")
    print(
        f"tiny model served by `transformers serve` (sequential for image-text models), {n} burberry "
        f"synthetic test samples, max_new_tokens={args.max_new_tokens}, batch size {args.batch_size}, "
        f"added round trip {args.latency_ms:g} ms"
    )
    for concurrency, seconds in timings.items():
        print(f"--concurrency {concurrency:<2}: {n / seconds:8.1f} samples/s ({seconds:.2f} s)")
    print(f"outputs identical; speed-up: {timings[1] / timings[args.concurrency]:.2f}x")


if __name__ == "__main__":
    main()
