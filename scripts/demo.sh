#!/usr/bin/env bash
# Set up, import SmolLM2-135M-Instruct, build one carrier holding three behaviors (a fixed answer
# to sports questions, refusal of harmful requests, upper-case creative writing) with the CPU
# schedule, train an eraser per behavior, register them, start the server and print answers with
# and without each eraser (and two stacked). The offline half is the recipe
# recipes/smollm2-three-behaviors.toml, run by `sft-eraser pipeline run`: every stage is cached
# under ${WORK:-runs/demo}, so a second run goes straight to serving and a killed run resumes its
# stage; stage times land in $WORK/timings.txt. SERVE=0: stop after the side-by-side. SETUP=0:
# use the Python environment as it is (sft-eraser installed, or on PATH) instead of
# scripts/setup.sh's .venv. SCHEDULE=quick: the quick recipe (42 min instead of 60; its carrier
# refuses 15% of benign prompts against 5%: docs/recipes.md).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
stage() { echo; echo "[demo $(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s] $*"; }
W=${WORK:-runs/demo}
PORT=${PORT:-8000}
SCHEDULE=${SCHEDULE:-full}
case $SCHEDULE in
  full) RECIPE=recipes/smollm2-three-behaviors.toml ;;
  quick) RECIPE=recipes/smollm2-three-behaviors-quick.toml ;;
  *) echo "SCHEDULE is full or quick, not $SCHEDULE" >&2; exit 2 ;;
esac

if [ "${SETUP:-1}" != 0 ]; then
  stage "setup (.venv)"
  bash scripts/setup.sh
  . .venv/bin/activate
fi
sft-eraser pipeline run "$RECIPE" --work "$W"
CARRIER=$W/carrier_all_caps  # the carrier of the recipe's last behavior

stage "serving $CARRIER"
sft-eraser serve --carrier "$CARRIER" --store "$W/store" --port "$PORT" --log-level warning &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
# /ready's status: ready, loading, failed or down (not listening yet). After a failed load the
# server stays up, so waiting for the process to exit would wait forever.
ready_status() {
  python - "$1" <<'EOF'
import json, sys, urllib.error, urllib.request
try:
    try:
        reply = urllib.request.urlopen(sys.argv[1], timeout=5)
    except urllib.error.HTTPError as answered:
        reply = answered
    print(json.load(reply)["status"])
except Exception:  # not listening yet, or not answering as the server does
    print("down")
EOF
}
while :; do
  status=$(ready_status "http://127.0.0.1:$PORT/ready") || status=down
  [ "$status" != ready ] || break
  [ "$status" != failed ] || { echo "the server is not serving $CARRIER (see its log)" >&2; exit 1; }
  kill -0 $SERVER 2>/dev/null || { echo "the server exited" >&2; exit 1; }
  sleep 1
done
python scripts/side_by_side.py --url "http://127.0.0.1:$PORT" --data "$W/data/test.jsonl"
if [ "${SERVE:-1}" != 0 ]; then
  echo
  echo "serving $CARRIER on http://127.0.0.1:$PORT (OpenAI API, extra field \"erasers\"); Ctrl-C stops"
  wait $SERVER
fi
