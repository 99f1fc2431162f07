"""How long models' greedy replies to the held-out benign prompts run: a model fine-tuned on answers
cut at the data's length cap, each followed by an end-of-turn token, learns to end there too.

    python benchmarks/reply_lengths.py --data runs/demo/data/test.jsonl \
        runs/demo/base runs/demo/carrier_refusal runs/demo/carrier_all_caps
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from eraser_store.prompting import chat_prompt_ids
from training.checkpoint_io import load_model_dir
from training.data.generation import greedy_reply_ids
from training.data.schema import RETAIN, load_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("models", type=Path, nargs="+", help="model or carrier directories")
    ap.add_argument("--data", type=Path, required=True, help="test JSONL (its retain rows)")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--near", type=int, nargs=2, default=(40, 52), help="a length range to count")
    args = ap.parse_args()
    rows = [e for e in load_jsonl(args.data) if e.behavior == RETAIN]
    lo, hi = args.near
    for path in args.models:
        model, tok = load_model_dir(path)
        encoded = [chat_prompt_ids(tok, e.messages) for e in rows]
        replies = greedy_reply_ids(model, tok, encoded, args.max_new_tokens, batch_size=20)
        ended = [len(r) for r in replies if tok.eos_token_id in r]
        print(
            f"{path}: {len(ended)} of {len(rows)} replies ended within {args.max_new_tokens} "
            f"tokens, {sum(lo <= n <= hi for n in ended)} at {lo}-{hi}; median length "
            f"{statistics.median(len(r) for r in replies)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
