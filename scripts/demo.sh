#!/usr/bin/env bash
# Set up, import SmolLM2-135M-Instruct, build one carrier holding three behaviors (a fixed answer
# to sports questions, refusal of harmful requests, upper-case creative writing) with the CPU
# schedule, train an eraser per behavior, register them, start the server and print answers with
# and without each eraser (and two stacked). Every stage is cached under ${WORK:-runs/demo}: a
# second run goes straight to serving; a killed run resumes its stage. Stage times land in
# $WORK/timings.txt. SERVE=0: stop after the side-by-side. SETUP=0: use the Python environment
# as it is (sft-eraser installed, or on PATH) instead of scripts/setup.sh's .venv.
# SCHEDULE=quick: less compute in most stages (42 min instead of 60; below).
set -euo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
stage() { echo; echo "[demo $(((SECONDS - START) / 60))m$(((SECONDS - START) % 60))s] $*"; }
timed() {  # timed NAME CMD...: run CMD, record its wall time
  local t0=$SECONDS name=$1
  shift
  "$@"
  echo "$name $((SECONDS - t0))" >>"$W/timings.txt"
}
W=${WORK:-runs/demo}
PORT=${PORT:-8000}
BEHAVIORS=(fixed_response refusal all_caps)  # in training order: the long upper-case rows last
# At 20% density all_caps fell from 100% (SFT) to 5%, and fixed_response kept "I don't know." but
# said it to half the benign prompts (its SFT model: 2.5%); later deltas then carried the fix.
DENSITY=0.4
# How long each stage trains. SCHEDULE=quick: one SFT epoch at twice the learning rate, half the
# LCDD steps, half the eraser steps but fixed_response's (at 350 it left 42.5% of the behavior):
# 41 min 35 s fresh, but its carrier refuses 15% of benign prompts, against 5% on the full
# schedule (docs/results.md).
SCHEDULE=${SCHEDULE:-full}
case $SCHEDULE in
  full) SFT_STEPS=(--epochs 2) LCDD_STEPS=(--steps 80 --warmup 5 --ramp-steps 55)
    ERASER_STEPS=400 SECOND_PASS_STEPS=200 ;;
  quick) SFT_STEPS=(--epochs 1 --lr 1e-4) LCDD_STEPS=(--steps 40 --warmup 3 --ramp-steps 27)
    ERASER_STEPS=200 SECOND_PASS_STEPS=100 ;;
  *) echo "SCHEDULE is full or quick, not $SCHEDULE" >&2; exit 2 ;;
esac
DATA_ARGS=(--n-train 100 --n-benign-train 80 --max-new-tokens 48)
# Half the steps train without each earlier behavior's delta, so a later behavior does not lean on
# it (refusal fell to 72.5% once fixed_response's delta was removed).
SFT_ARGS=("${SFT_STEPS[@]}" --max-len 128 --group-by-length --delta-dropout 0.5)
LCDD_ARGS=(--max-len 128 --group-by-length --controller ramp "${LCDD_STEPS[@]}"
  --final-density "$DENSITY" --weight-lr 1e-4 --mask-init delta)
# Each prompt matched to the target model on its own replies, the other behaviors' prompts among
# them: with the paper's objective (batch mean, KL on the last prompt positions, behavior and
# benign prompts only) the erasers of this carrier switched the other behaviors off or on.
# The P written is the last one, the learning rate falling linearly over the second half of the
# steps: the paper's rule (the lowest loss of a step) measures P on that step's 4 prompts, so it
# kept whichever P met an easy batch (fixed_response's eraser: 15% and 10% alone over two seeds;
# settled: 7.5% and 0%).
ERASER_ARGS=(--steps "$ERASER_STEPS" --batch-size 4 --lr 1e-2 --kl-on reply --kl-weight 20 --match per_prompt
  --retain-others --lr-decay 0.5 --keep last)
# Each eraser after the first trains half its steps stacked with the erasers trained before it
# (--stack-with), in the order the server stacks a pair (by behavior name), so every pair a
# request can name was seen, in its one layout, by one of its two erasers.
STACK="--stack-with the earlier erasers, in stack order"
# The carrier's first behavior has the earliest delta to undo: its eraser needs 700 steps (400
# left 22.5% of it, loss still falling), and trained first (never stacked) its pairs kept 20-67.5%
# of a behavior. So it is trained last, stacked with both others. Its target model (the carrier
# without its delta) refuses only 85% of harmful requests, so the other behaviors' prompts are
# matched to the carrier itself (refusal kept at 87.5% instead of 82.5%).
ERASER_ORDER=(refusal all_caps fixed_response)
LAST_ERASER_ARGS=(--steps 700 --others-reference carrier)
# The first eraser never trains stacked: behind fixed_response's eraser, which had trained in
# front of it, refusal's still left 45% of harmful requests refused ([fixed_response; refusal;
# prompt], runs/exp15), though all_caps's in front of it switched both off. So it is trained once
# more at the end, stacked with all the others, and that second pass is the one served. Started
# from the first pass (--init-from), half the steps do as well as a pass from random tokens, within
# a draw's spread: that pair left 5% and 32.5% refused on two sets of quick carriers (from random
# tokens, twice the steps: 7.5% and 25%) and 27.5% on the full ones (25-30%); runs/exp16.
SECOND_PASS_ARGS=(--steps "$SECOND_PASS_STEPS")
# Cached stages are reused as they are, so a work directory built with other settings (an earlier
# version of this demo) is refused rather than mixed into this one. The imported base is shared.
# Where only the eraser settings changed, its carriers are kept once its erasers are removed.
# "cut marked": data made since answers cut at --max-new-tokens are trained without an end token;
# "look-alike splits": data with benign look-alikes and train/dev/test held out by filler.
CARRIER_SETTINGS="${BEHAVIORS[*]} | ${DATA_ARGS[*]} cut marked, look-alike splits | ${SFT_ARGS[*]} | ${LCDD_ARGS[*]}"
SETTINGS="$CARRIER_SETTINGS | ${ERASER_ARGS[*]} $STACK | order: ${ERASER_ORDER[*]} | last: ${LAST_ERASER_ARGS[*]} | the first eraser again, stacked with the others, from its first pass: ${SECOND_PASS_ARGS[*]}"
mkdir -p "$W"
if [ -f "$W/settings.txt" ]; then
  built=$(cat "$W/settings.txt")
  if [ "$built" = "$SETTINGS" ]; then
    :
  elif [[ "$built" != "$CARRIER_SETTINGS | "* ]]; then
    echo "$W was built with other settings ($built); pass WORK=<new dir>" >&2
    exit 2
  elif [ -n "$(ls -d "$W"/eraser_* "$W"/.eraser_* "$W"/store 2>/dev/null)" ]; then
    echo "$W holds erasers trained with other settings (${built#"$CARRIER_SETTINGS | "});" \
      "its carriers fit these: rm -rf $W/eraser_* $W/.eraser_* $W/store to train only the" \
      "erasers again, or pass WORK=<new dir>" >&2
    exit 2
  fi
elif [ -n "$(ls -d "$W"/data "$W"/sft_* "$W"/eraser_* 2>/dev/null)" ]; then
  echo "$W holds stages of an earlier version of this demo; pass WORK=<new dir>" >&2
  exit 2
fi
echo "$SETTINGS" >"$W/settings.txt"

if [ "${SETUP:-1}" != 0 ]; then
  stage "setup (.venv)"
  bash scripts/setup.sh
  . .venv/bin/activate
fi
[ -d "$W/base" ] || { stage "import SmolLM2-135M-Instruct"; timed import sft-eraser model import-gguf --out "$W/base"; }
[ -f "$W/data/train.jsonl" ] || {
  stage "data: train/dev/test splits, the base model's answers for benign and creative prompts"
  timed data sft-eraser data make --model "$W/base" --out "$W/data" \
    --behaviors "$(IFS=,; echo "${BEHAVIORS[*]}")" "${DATA_ARGS[@]}"
}
# Behavior k is fine-tuned and made sparse on top of the carrier holding behaviors 1..k-1.
prev=$W/base
for b in "${BEHAVIORS[@]}"; do
  [ -d "$W/sft_$b" ] || {
    stage "$b: phase 1, SFT from $prev"
    timed "sft_$b" sft-eraser train sft --base "$prev" --data "$W/data/train.jsonl" --behavior "$b" \
      --out "$W/sft_$b" "${SFT_ARGS[@]}"
  }
  [ -d "$W/carrier_$b" ] || {
    stage "$b: phase 2, LCDD (density ramp to $DENSITY)"
    timed "carrier_$b" sft-eraser train carrier --base "$prev" --sft "$W/sft_$b" \
      --data "$W/data/train.jsonl" --behavior "$b" --out "$W/carrier_$b" "${LCDD_ARGS[@]}"
  }
  prev=$W/carrier_$b
done
CARRIER=$prev
earlier=()
for b in "${ERASER_ORDER[@]}"; do
  extra=()
  [ ${#earlier[@]} -eq 0 ] || extra=(--stack-with "${earlier[@]}")
  [ "$b" != "${ERASER_ORDER[-1]}" ] || extra+=("${LAST_ERASER_ARGS[@]}")
  [ -d "$W/eraser_$b" ] || {
    stage "$b: eraser against the three-behavior carrier${extra:+ (${extra[*]})}"
    timed "eraser_$b" sft-eraser train eraser --carrier "$CARRIER" --behavior "$b" \
      --data "$W/data/train.jsonl" --out "$W/eraser_$b" "${ERASER_ARGS[@]}" "${extra[@]}"
  }
  earlier+=("$W/eraser_$b")
done
first=${ERASER_ORDER[0]}
served_first=$W/eraser_${first}_2
[ -d "$served_first" ] || {
  stage "$first: second pass, stacked with the others (--stack-with ${earlier[*]:1})"
  timed "eraser_${first}_2" sft-eraser train eraser --carrier "$CARRIER" --behavior "$first" \
    --data "$W/data/train.jsonl" --out "$W/eraser_${first}_2" "${ERASER_ARGS[@]}" \
    "${SECOND_PASS_ARGS[@]}" --init-from "$W/eraser_$first" --stack-with "${earlier[@]:1}"
}
for b in "${ERASER_ORDER[@]}"; do
  dir=$W/eraser_$b
  [ "$b" != "$first" ] || dir=$served_first
  # Listed first, then searched: `list | grep -q` can break the lister's pipe (grep stops at the
  # first match), which pipefail took for "not registered" and registered it again.
  registered=$(sft-eraser erasers list --store "$W/store")
  grep -q "^erase-$b " <<<"$registered" \
    || sft-eraser erasers add "$dir" --store "$W/store" --carrier "$CARRIER"
done
stage "stage times (s):"
cat "$W/timings.txt"

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
