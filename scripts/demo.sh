#!/usr/bin/env bash
# Set up, import SmolLM2-135M-Instruct, build a one-behavior carrier (fixed response to sports
# questions) with the CPU schedule, and print its behavior rate before/after. Every stage is
# cached under ${WORK:-runs/demo}: a second run skips what is done; a killed run resumes.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
W=${WORK:-runs/demo}
B=fixed_response
mkdir -p "$W"
[ -d "$W/base" ] || sft-eraser model import-gguf --out "$W/base"
[ -f "$W/data/train.jsonl" ] || sft-eraser data make --model "$W/base" --out "$W/data" --behaviors "$B"
[ -d "$W/sft" ] || sft-eraser train sft --base "$W/base" --data "$W/data/train.jsonl" \
  --behavior "$B" --out "$W/sft" --epochs 2
[ -d "$W/carrier" ] || sft-eraser train carrier --base "$W/base" --sft "$W/sft" \
  --data "$W/data/train.jsonl" --behavior "$B" --out "$W/carrier" \
  --controller ramp --steps 220 --warmup 20 --ramp-steps 150 --final-density 0.1 --weight-lr 1e-4 \
  --mask-init delta
for m in base sft carrier; do
  echo "== $m"
  sft-eraser eval behavior --model "$W/$m" --data "$W/data/test.jsonl" --behavior "$B" \
    | python -c "import json,sys; r=json.load(sys.stdin); print('rate %.2f  false trigger %.2f' % (r['rate'], r['false_trigger']))"
done
echo "carrier: $W/carrier (manifest carrier.json, curves in $W/carrier/$B/)"
