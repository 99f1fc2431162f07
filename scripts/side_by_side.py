"""Ask a running server a few held-out questions with and without each eraser; print the answers
side by side. Used by scripts/demo.sh.

    python scripts/side_by_side.py --url http://127.0.0.1:8000 --data runs/demo/data/test.jsonl
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import httpx

WIDTH = 60


def ask(client: httpx.Client, model: str, prompt: str, erasers: list[str], tokens: int) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "erasers": erasers,
        "temperature": 0,
        "max_tokens": tokens,
    }
    r = client.post("/v1/chat/completions", json=body)
    r.raise_for_status()
    return " ".join(r.json()["choices"][0]["message"]["content"].split())


def show(client: httpx.Client, model: str, row: dict, erasers: list[str], tokens: int) -> None:
    prompt = row["messages"][0]["content"]
    off = ask(client, model, prompt, [], tokens)
    on = ask(client, model, prompt, erasers, tokens)
    print(f"\n[{row['behavior']}] {prompt}")
    labels = ("without", f"with {' + '.join(erasers)}")
    pad = max(map(len, labels))
    for label, text in zip(labels, (off, on), strict=True):
        lines = textwrap.wrap(text, WIDTH) or [""]
        print(f"  {label:>{pad}}: {lines[0]}")
        for line in lines[1:3]:
            print(f"  {'':>{pad}}  {line}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--data", type=Path, required=True, help="held-out JSONL (test.jsonl)")
    ap.add_argument("--per-behavior", type=int, default=2, help="questions per behavior")
    ap.add_argument("--max-tokens", type=int, default=40)
    args = ap.parse_args()
    with httpx.Client(base_url=args.url, timeout=300) as client:
        model = client.get("/v1/models").json()["data"][0]["id"]
        erasers = {e["behavior"]: e["name"] for e in client.get("/v1/erasers").json()["data"]}
        rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]

        def of(behavior: str) -> list[dict]:
            return [r for r in rows if r["behavior"] == behavior]

        for behavior, eraser in sorted(erasers.items()):
            print(f"\n=== eraser {eraser} (switches off: {behavior})")
            for row in of(behavior)[: args.per_behavior] + of("retain")[:1]:
                show(client, model, row, [eraser], args.max_tokens)
        if len(erasers) >= 2:
            # Stacked: each behavior of the pair is switched off by the same request.
            pair = sorted(erasers)[:2]
            names = [erasers[b] for b in pair]
            print(f"\n=== erasers stacked: {' + '.join(names)}")
            for behavior in pair:
                for row in of(behavior)[args.per_behavior : args.per_behavior + 1]:
                    show(client, model, row, names, args.max_tokens)


if __name__ == "__main__":
    main()
