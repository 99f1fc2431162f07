"""Engine threads (`sft-eraser serve --threads`) on SmolLM2-135M-Instruct: one request at a time
and concurrent clients, on an idle machine and beside a CPU-bound neighbour.

    python benchmarks/server_threads.py [--threads 1 2] [--clients 2] [--requests 4]

For each setting a server process is started on the imported SmolLM2 (no erasers: the engine is
what is measured) and, within one trial, every thread count runs back to back, idle and then
with `--load` busy-loop processes beside it, so the ratios are paired (this machine drifts by
~25% from minute to minute). Prints one JSON record per (threads, load) with the median over
trials of the mean request latency and the generated tokens per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PROMPT = [{"role": "user", "content": "Write two sentences about the sea."}]


def make_carrier(out: Path) -> Path:
    """The imported model with a carrier manifest: the server serves any carrier directory."""
    from training.models.gguf_import import import_gguf

    path = import_gguf(out / "smollm2")
    manifest = {"format": "sft-eraser-carrier", "fingerprint": "sha256:bench-threads"}
    (path / "carrier.json").write_text(json.dumps(manifest))
    return path


def serve(carrier: Path, store: Path, port: int, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sft_eraser", "serve", "--carrier", str(carrier)]
    cmd += ["--store", str(store), "--port", str(port), "--threads", str(threads)]
    cmd += ["--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the server did not become ready")


def one(url: str, model: str, tokens: int) -> float:
    body = {
        "model": model,
        "messages": PROMPT,
        "temperature": 0,
        "max_tokens": tokens,
        "ignore_eos": True,
    }
    start = time.perf_counter()
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
    r.raise_for_status()
    return time.perf_counter() - start


def phase(url: str, model: str, clients: int, requests: int, tokens: int) -> dict:
    """`clients` clients, each sending `requests` requests one after another."""
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        futures = [
            pool.submit(lambda: [one(url, model, tokens) for _ in range(requests)])
            for _ in range(clients)
        ]
        latencies = [t for f in futures for t in f.result()]
    wall = time.perf_counter() - start
    return {"latency_s": statistics.mean(latencies), "tok_s": clients * requests * tokens / wall}


def busy_loops(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 2], help="concurrent clients")
    ap.add_argument("--requests", type=int, default=3, help="requests per client per phase")
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes for 'loaded'")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--port", type=int, default=8791)
    args = ap.parse_args()

    results: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        carrier = make_carrier(Path(tmp))
        url, model = f"http://127.0.0.1:{args.port}", carrier.name
        for trial in range(args.trials):
            for threads in args.threads:
                server = serve(carrier, Path(tmp) / "store", args.port, threads)
                try:
                    one(url, model, 4)  # warm-up
                    for load in ("idle", "loaded"):
                        neighbours = busy_loops(args.load) if load == "loaded" else []
                        try:
                            for clients in args.clients:
                                m = phase(url, model, clients, args.requests, args.tokens)
                                results.setdefault((threads, load, clients), []).append(m)
                                print(f"trial {trial} threads={threads} {load} {clients}: {m}")
                        finally:
                            for p in neighbours:
                                p.kill()
                finally:
                    server.terminate()
                    server.wait(60)
    for (threads, load, clients), runs in sorted(results.items()):
        record = {
            "threads": threads,
            "load": load,
            "clients": clients,
            "latency_s": round(statistics.median(r["latency_s"] for r in runs), 3),
            "tok_s": round(statistics.median(r["tok_s"] for r in runs), 1),
            "trials": len(runs),
        }
        print(json.dumps(record))
    machine = platform.processor() or platform.machine()
    print(json.dumps({"machine": machine, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
