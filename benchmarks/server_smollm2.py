"""Serving throughput on SmolLM2-135M-Instruct: the server under 16 concurrent clients with mixed
eraser sets, against `transformers` generate one request at a time and on a static batch of 16.

Uses the carrier and erasers of benchmarks/lcdd_smollm2.py and benchmarks/eraser_smollm2.py:

    python benchmarks/server_smollm2.py --work runs/bench_lcdd_delta \
        --eraser-a eraser_carrier_s600 --eraser-b eraser_carrier_s250

All figures come from one run; results go to docs/results/server_smollm2.json. Every request asks
for exactly --new-tokens tokens (greedy; `ignore_eos` on the server, `min_new_tokens` for
generate), so each side does the same work on the same prompts.

This machine's speed drifts by up to ~25% from one minute to the next, so comparisons are paired:
each trial runs the static batch and the three server phases back to back (about a minute), the
ratios are taken within a trial, and the median over --trials trials is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from eraser_store import EraserStore, carrier_ref
from eraser_store.prompting import chat_prompt_ids
from training.checkpoint_io import load_model_dir
from training.data.generation import left_pad
from training.data.schema import load_jsonl

ROOT = Path(__file__).resolve().parents[1]


def prompts_from(data: Path, n: int) -> list[list[dict]]:
    rows = [list(e.messages) for e in load_jsonl(data)]
    return [rows[i % len(rows)] for i in range(n)]


@torch.inference_mode()
def generate_tokens_per_s(model, tok, prompts, new_tokens: int, batch: int) -> dict:
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    encoded = [chat_prompt_ids(tok, p) for p in prompts]
    started, made = time.perf_counter(), 0
    for i in range(0, len(encoded), batch):
        ids, mask = (t.to(model.device) for t in left_pad(encoded[i : i + batch], pad))
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=pad,
        )
        made += (out.shape[1] - ids.shape[1]) * ids.shape[0]
    wall = time.perf_counter() - started
    return {"tokens": made, "wall_s": round(wall, 2), "tokens_per_s": round(made / wall, 2)}


def start_server(
    carrier: Path, store: Path, port: int, max_batch: int, device: str
) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "sft_eraser", "serve", "--carrier", str(carrier)]
    cmd += ["--store", str(store), "--port", str(port), "--max-batch-size", str(max_batch)]
    cmd += ["--device", device, "--log-level", "warning"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not become ready")


async def load(url, model, prompts, eraser_sets, clients: int, per_client: int, new_tokens: int):
    """`clients` closed-loop clients, each sending `per_client` streamed requests in turn."""
    sets = itertools.cycle(eraser_sets)
    jobs = [
        [(prompts[(c * per_client + k) % len(prompts)], next(sets)) for k in range(per_client)]
        for c in range(clients)
    ]
    ttft, tokens = [], 0

    async def client(http, my_jobs):
        nonlocal tokens
        for messages, erasers in my_jobs:
            body = {
                "model": model,
                "messages": messages,
                "erasers": erasers,
                "temperature": 0,
                "max_tokens": new_tokens,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            sent = time.perf_counter()
            first = None
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    if event["choices"] and event["choices"][0]["delta"].get("content"):
                        first = first or time.perf_counter()
                    if event.get("usage"):
                        tokens += event["usage"]["completion_tokens"]
            ttft.append(first - sent)

    started, cpu = time.perf_counter(), time.process_time()
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        await asyncio.gather(*(client(http, j) for j in jobs))
    wall = time.perf_counter() - started
    # The clients share the 2 cores with the server; what they took is not the server's.
    client_cpu = time.process_time() - cpu
    ttft.sort()
    return {
        "requests": clients * per_client,
        "tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_s": round(statistics.median(ttft), 3),
        "ttft_p95_s": round(ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))], 3),
        "client_cpu_s": round(client_cpu, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_lcdd_delta"))
    ap.add_argument("--eraser-a", default="eraser_carrier_s600")
    ap.add_argument("--eraser-b", default="eraser_carrier_s250")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=2, help="requests per client per phase")
    ap.add_argument("--sequential", type=int, default=4, help="requests one by one, twice")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument(
        "--device", default="auto", help="server and baseline (auto: CUDA in bf16 when present)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/server_smollm2.json")
    args = ap.parse_args()
    w = args.work
    carrier = w / "carrier"
    prompts = prompts_from(w / "data" / "test.jsonl", args.clients * args.per_client)
    n = args.new_tokens
    model, tok = load_model_dir(carrier, device=args.device)
    gpu = f", {torch.cuda.get_device_name(model.device)}" if model.device.type == "cuda" else ""
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, threads {torch.get_num_threads()}{gpu}, {model.dtype}",
        "new_tokens": n,
        "clients": args.clients,
    }

    generate_tokens_per_s(model, tok, prompts[:2], 8, 2)  # warm-up
    sequential = [generate_tokens_per_s(model, tok, prompts[: args.sequential], n, 1)]
    print("generate, one at a time:", sequential[0], flush=True)

    phases = {
        "server_mixed": [[], ["a"], ["b"], ["a", "b"]],
        "server_no_eraser": [[]],
        "server_eraser_a": [["a"]],
    }
    runs: dict[str, list[dict]] = {"generate_static_batch": [], **{k: [] for k in phases}}
    with tempfile.TemporaryDirectory() as tmp:
        store = EraserStore(Path(tmp) / "store", carrier=carrier_ref(carrier))
        store.add(w / args.eraser_a, name="a")
        store.add(w / args.eraser_b, name="b")
        results["eraser_tokens"] = store.record("a").tokens
        proc = start_server(carrier, store.root, args.port, args.clients, args.device)
        url = f"http://127.0.0.1:{args.port}"
        model_id = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        try:
            asyncio.run(load(url, model_id, prompts, [[]], args.clients, 1, n))  # warm-up
            for _ in range(args.trials):
                # The server idles meanwhile: its process only waits on its socket.
                static = generate_tokens_per_s(model, tok, prompts, n, args.clients)
                runs["generate_static_batch"].append(static)
                print(f"generate, static batch {args.clients}:", static, flush=True)
                for name, sets in phases.items():
                    before = engine_counters(url)
                    run = asyncio.run(
                        load(url, model_id, prompts, sets, args.clients, args.per_client, n)
                    )
                    after = engine_counters(url)
                    steps = after["decode_steps"] - before["decode_steps"]
                    run["mean_decode_batch"] = round(
                        (after["decode_rows"] - before["decode_rows"]) / steps, 2
                    )
                    run["prefills"] = int(after["prefills"] - before["prefills"])
                    runs[name].append(run)
                    print(name, run, flush=True)
        finally:
            proc.terminate()
            proc.wait()

    sequential.append(generate_tokens_per_s(model, tok, prompts[: args.sequential], n, 1))
    print("generate, one at a time:", sequential[1], flush=True)
    seq = statistics.mean(r["tokens_per_s"] for r in sequential)
    results["generate_sequential"] = {
        "tokens_per_s": round(seq, 2),
        "tokens_per_s_all": [r["tokens_per_s"] for r in sequential],
    }
    for name, values in runs.items():
        rates = [r["tokens_per_s"] for r in values]
        results[name] = {
            "tokens_per_s": round(statistics.median(rates), 2),
            "tokens_per_s_all": rates,
        }
    for key in ("ttft_p50_s", "ttft_p95_s", "mean_decode_batch", "client_cpu_s"):
        results["server_mixed"][key] = round(
            statistics.median(r[key] for r in runs["server_mixed"]), 3
        )

    def paired(numerator: str, denominator: str) -> list[float]:
        return [
            x["tokens_per_s"] / y["tokens_per_s"]
            for x, y in zip(runs[numerator], runs[denominator], strict=True)
        ]

    mixed_over_static = paired("server_mixed", "generate_static_batch")
    a_over_none = paired("server_eraser_a", "server_no_eraser")
    results["ratio_vs_static_batch_all"] = [round(r, 3) for r in mixed_over_static]
    results["ratio_vs_static_batch"] = round(statistics.median(mixed_over_static), 3)
    results["speedup_vs_sequential"] = round(results["server_mixed"]["tokens_per_s"] / seq, 2)
    results["eraser_throughput_cost_all"] = [round(1 - r, 3) for r in a_over_none]
    results["eraser_throughput_cost"] = round(1 - statistics.median(a_over_none), 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    summary = ["speedup_vs_sequential", "ratio_vs_static_batch", "eraser_throughput_cost"]
    print(json.dumps({k: results[k] for k in summary}, indent=2))


def engine_counters(url: str) -> dict[str, float]:
    text = httpx.get(url + "/metrics").text
    names = ("decode_steps", "decode_rows", "prefills")
    values = {}
    for line in text.splitlines():
        for name in names:
            if line.startswith(f"sft_eraser_{name}_total "):
                values[name] = float(line.split()[1])
    return values


if __name__ == "__main__":
    main()
