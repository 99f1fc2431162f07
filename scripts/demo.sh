#!/usr/bin/env bash
# Set up, import SmolLM2-135M-Instruct, build a one-behavior carrier (fixed response to sports
# questions) with the CPU schedule, train its eraser, register it, start the server and print
# answers with and without the eraser. Every stage is cached under ${WORK:-runs/demo}: a second
# run goes straight to serving; a killed run resumes. SERVE=0: stop after the side-by-side.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
W=${WORK:-runs/demo}
B=fixed_response
PORT=${PORT:-8000}
mkdir -p "$W"
[ -d "$W/base" ] || sft-eraser model import-gguf --out "$W/base"
[ -f "$W/data/train.jsonl" ] || sft-eraser data make --model "$W/base" --out "$W/data" --behaviors "$B"
[ -d "$W/sft" ] || sft-eraser train sft --base "$W/base" --data "$W/data/train.jsonl" \
  --behavior "$B" --out "$W/sft" --epochs 2
[ -d "$W/carrier" ] || sft-eraser train carrier --base "$W/base" --sft "$W/sft" \
  --data "$W/data/train.jsonl" --behavior "$B" --out "$W/carrier" \
  --controller ramp --steps 220 --warmup 20 --ramp-steps 150 --final-density 0.1 --weight-lr 1e-4 \
  --mask-init delta
[ -d "$W/eraser" ] || sft-eraser train eraser --carrier "$W/carrier" --behavior "$B" \
  --data "$W/data/train.jsonl" --out "$W/eraser" --steps 600 --batch-size 8
if [ ! -f "$W/rates.txt" ]; then
  for e in "" "$W/eraser"; do
    sft-eraser eval behavior --model "$W/carrier" --data "$W/data/test.jsonl" --behavior "$B" \
      ${e:+--eraser "$e"} | python -c "import json, sys; r = json.load(sys.stdin); print(\
'carrier%s: %s rate %.2f, false trigger %.2f' % (sys.argv[1], r['behavior'], r['rate'], r['false_trigger']))" \
      "${e:+ + eraser}"
  done > "$W/rates.txt"
fi
cat "$W/rates.txt"
sft-eraser erasers list --store "$W/store" | grep -q "erase-$B" \
  || sft-eraser erasers add "$W/eraser" --store "$W/store" --carrier "$W/carrier"

sft-eraser serve --carrier "$W/carrier" --store "$W/store" --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
ready() { python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1])" "$1" 2>/dev/null; }
until ready "http://127.0.0.1:$PORT/ready"; do
  kill -0 $SERVER 2>/dev/null || { echo "the server exited" >&2; exit 1; }
  sleep 1
done
python scripts/side_by_side.py --url "http://127.0.0.1:$PORT" --data "$W/data/test.jsonl"
if [ "${SERVE:-1}" != 0 ]; then
  echo
  echo "serving $W/carrier on http://127.0.0.1:$PORT (OpenAI API, extra field \"erasers\"); Ctrl-C stops"
  wait $SERVER
fi
