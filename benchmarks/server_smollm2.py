"""Serving throughput on SmolLM2-135M-Instruct: the server under 16 concurrent clients with mixed
eraser sets, against `transformers` generate one request at a time and on a static batch of 16.

Uses the carrier and erasers of benchmarks/lcdd_smollm2.py and benchmarks/eraser_smollm2.py:

    python benchmarks/server_smollm2.py --work runs/bench_lcdd_delta \
        --eraser-a eraser_carrier_s600 --eraser-b eraser_carrier_s250

or, comparing the engines (vLLM served from .venv-vllm) on SmolLM2 with random 20-token erasers:

    python benchmarks/server_smollm2.py --random-work --work runs/bench_engines \
        --engine builtin,vllm --out docs/results/server_engines_smollm2.json

All figures come from one run; results go to docs/results/server_smollm2.json. Every request asks
for exactly --new-tokens tokens (greedy; `ignore_eos` on the server, `min_new_tokens` for
generate), so each side does the same work on the same prompts.

This machine's speed drifts by up to ~25% from one minute to the next, so comparisons are paired:
each trial runs the static batch and the three server phases of each engine back to back, the
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
    python: str, engine: str, carrier: Path, store: Path, port: int, max_batch: int, device: str
) -> subprocess.Popen:
    cmd = [python, "-m", "sft_eraser", "serve", "--carrier", str(carrier), "--engine", engine]
    cmd += ["--store", str(store), "--port", str(port), "--max-batch-size", str(max_batch)]
    cmd += ["--device", device, "--log-level", "warning"]
    if engine == "vllm":  # the context the benchmark needs; a small CPU KV cache
        cmd += ["--max-model-len", "2048", "--kv-cache-gb", "2"]
    proc = subprocess.Popen(cmd)
    deadline = time.monotonic() + 900  # vLLM compiles the model on its first start
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the {engine} server did not become ready")


def random_work(work: Path) -> None:
    """A work directory like lcdd_smollm2's where none was trained: SmolLM2 itself as the
    carrier, two random 20-token erasers (their speed is that of trained ones) and test
    prompts from `data make` (with placeholder answers: only the prompts are used)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from server_helpers import as_carrier, make_eraser

    from training.data.make import Answer, MakeDataConfig, make_dataset
    from training.models.gguf_import import import_gguf

    base, _ = load_model_dir(import_gguf(work / "base"), device="cpu")
    as_carrier(base, work / "carrier")
    for name, seed in (("random_a", 1), ("random_b", 2)):
        make_eraser(work / "carrier", work / name, name, seed, tokens=20)
    cfg = MakeDataConfig(behaviors=["fixed_response", "refusal", "all_caps"], out_dir=work / "data")
    make_dataset(cfg, lambda prompts: [Answer("Sure.") for _ in prompts])


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


def greedy_replies(url: str, model: str, prompts: list, tokens: int = 32) -> list[str]:
    """Greedy replies to each prompt with each eraser set (none, a, b, a+b), one at a time."""
    out = []
    for messages in prompts:
        for erasers in ([], ["a"], ["b"], ["a", "b"]):
            body = {"model": model, "messages": messages, "erasers": erasers}
            body |= {"temperature": 0, "max_tokens": tokens}
            r = httpx.post(url + "/v1/chat/completions", json=body, timeout=600)
            r.raise_for_status()
            out.append(r.json()["choices"][0]["message"]["content"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--work", type=Path, default=Path("runs/bench_lcdd_delta"))
    ap.add_argument("--eraser-a", default="eraser_carrier_s600")
    ap.add_argument("--eraser-b", default="eraser_carrier_s250")
    ap.add_argument(
        "--random-work",
        action="store_true",
        help="build --work from SmolLM2 itself with random erasers random_a, random_b (if "
        "missing) and use those",
    )
    ap.add_argument(
        "--engine",
        default="builtin",
        help="server engines, comma-separated, each measured in every trial: builtin,vllm",
    )
    ap.add_argument(
        "--vllm-python",
        default=str(ROOT / ".venv-vllm/bin/python"),
        help="the Python that serves --engine vllm (scripts/setup_vllm.sh makes it)",
    )
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=2, help="requests per client per phase")
    ap.add_argument("--sequential", type=int, default=4, help="requests one by one, twice")
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--port", type=int, default=8765, help="the first engine's; then +1, ...")
    ap.add_argument(
        "--device", default="auto", help="server and baseline (auto: CUDA in bf16 when present)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/server_smollm2.json")
    args = ap.parse_args()
    engines = args.engine.split(",")
    w = args.work
    if args.random_work:
        args.eraser_a, args.eraser_b = "random_a", "random_b"
        if not (w / "carrier").exists():
            random_work(w)
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
        "engines": engines,
    }

    generate_tokens_per_s(model, tok, prompts[:2], 8, 2)  # warm-up
    sequential = [generate_tokens_per_s(model, tok, prompts[: args.sequential], n, 1)]
    print("generate, one at a time:", sequential[0], flush=True)

    sets = {"mixed": [[], ["a"], ["b"], ["a", "b"]], "no_eraser": [[]], "eraser_a": [["a"]]}
    # Phase names: "server_mixed" etc. for the built-in engine (as before), "vllm_mixed" ...
    prefix = {"builtin": "server", "vllm": "vllm"}
    phases = {f"{prefix[e]}_{k}": (e, v) for e in engines for k, v in sets.items()}
    runs: dict[str, list[dict]] = {"generate_static_batch": [], **{k: [] for k in phases}}
    with tempfile.TemporaryDirectory() as tmp:
        store = EraserStore(Path(tmp) / "store", carrier=carrier_ref(carrier))
        store.add(w / args.eraser_a, name="a")
        store.add(w / args.eraser_b, name="b")
        results["eraser_tokens"] = store.record("a").tokens
        urls, procs = {}, []
        try:
            for i, engine in enumerate(engines):
                python = args.vllm_python if engine == "vllm" else sys.executable
                port = args.port + i
                procs.append(
                    start_server(
                        python, engine, carrier, store.root, port, args.clients, args.device
                    )
                )
                urls[engine] = f"http://127.0.0.1:{port}"
            model_id = httpx.get(urls[engines[0]] + "/v1/models").json()["data"][0]["id"]
            for url in urls.values():  # warm-up
                asyncio.run(load(url, model_id, prompts, [[]], args.clients, 1, n))
            if len(engines) > 1:
                replies = {e: greedy_replies(u, model_id, prompts[:8]) for e, u in urls.items()}
                first, *others = engines
                for other in others:
                    same = sum(a == b for a, b in zip(replies[first], replies[other], strict=True))
                    results[f"greedy_same_{other}_{first}"] = f"{same}/{len(replies[first])}"
                    print(f"greedy replies, {other} = {first}:", same, "of", len(replies[first]))
            for _ in range(args.trials):
                # The servers idle meanwhile: their processes only wait for requests.
                static = generate_tokens_per_s(model, tok, prompts, n, args.clients)
                runs["generate_static_batch"].append(static)
                print(f"generate, static batch {args.clients}:", static, flush=True)
                for name, (engine, eraser_sets) in phases.items():
                    url = urls[engine]
                    before = engine_counters(url)
                    run = asyncio.run(
                        load(url, model_id, prompts, eraser_sets, args.clients, args.per_client, n)
                    )
                    after = engine_counters(url)
                    steps = after.get("decode_steps", 0) - before.get("decode_steps", 0)
                    if steps:  # the built-in engine's own counters
                        run["mean_decode_batch"] = round(
                            (after["decode_rows"] - before["decode_rows"]) / steps, 2
                        )
                        run["prefills"] = int(after["prefills"] - before["prefills"])
                    runs[name].append(run)
                    print(name, run, flush=True)
        finally:
            for proc in procs:
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

    def paired(numerator: str, denominator: str) -> list[float]:
        return [
            x["tokens_per_s"] / y["tokens_per_s"]
            for x, y in zip(runs[numerator], runs[denominator], strict=True)
        ]

    summary = []
    for engine in engines:
        p = prefix[engine]
        mixed = f"{p}_mixed"
        for key in ("ttft_p50_s", "ttft_p95_s", "mean_decode_batch", "client_cpu_s"):
            if key in runs[mixed][0]:
                results[mixed][key] = round(statistics.median(r[key] for r in runs[mixed]), 3)
        # The built-in engine keeps its earlier key names.
        tag = "" if engine == "builtin" else f"{engine}_"
        mixed_over_static = paired(mixed, "generate_static_batch")
        a_over_none = paired(f"{p}_eraser_a", f"{p}_no_eraser")
        results[f"{tag}ratio_vs_static_batch_all"] = [round(r, 3) for r in mixed_over_static]
        results[f"{tag}ratio_vs_static_batch"] = round(statistics.median(mixed_over_static), 3)
        results[f"{tag}speedup_vs_sequential"] = round(results[mixed]["tokens_per_s"] / seq, 2)
        results[f"{tag}eraser_throughput_cost_all"] = [round(1 - r, 3) for r in a_over_none]
        results[f"{tag}eraser_throughput_cost"] = round(1 - statistics.median(a_over_none), 3)
        summary += [f"{tag}{k}" for k in ("speedup_vs_sequential", "eraser_throughput_cost")]
    if {"builtin", "vllm"} <= set(engines):
        vllm_over_builtin = paired("vllm_mixed", "server_mixed")
        results["vllm_over_builtin_mixed_all"] = [round(r, 3) for r in vllm_over_builtin]
        results["vllm_over_builtin_mixed"] = round(statistics.median(vllm_over_builtin), 3)
        summary.append("vllm_over_builtin_mixed")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
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
