#!/usr/bin/env bash
# The CUDA path in one short run, for a lent GPU machine (the `device` tool): the demo pipeline
# (scripts/demo.sh: data, SFT + LCDD of three behaviors with fp32 master weights and bf16
# autocast, four erasers, registration, bf16 serving, the side-by-side) on a model of
# SmolLM2-135M's shape with random weights, then benchmarks/server_smollm2.py on its carrier.
# The real weights cannot travel, so the figures are wall times and throughput, not behavior
# rates; a random model seldom ends a reply early, so generation runs to its cap (an upper bound).
#   here:    bash benchmarks/gpu_pack.sh
#   device:  run(command="bash benchmarks/gpu_check.sh", carry=[".device"], timeout_s=560)
# Results: $OUT (the device tool's folder) or runs/gpu_check: env.txt, demo.log, timings.txt,
# server.json, server.log (and server_engines.json, .log where vLLM is installed). SHAPE=DIR
# builds another shape (a tiny model dir for a dry run on CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
R=${OUT:-runs/gpu_check}
W=${WORK:-/tmp/gpu_check}
SHAPE=${SHAPE:-.device/smollm2_shape}
mkdir -p "$R"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # this tree, installed or not
if ! python3 -c "import fastapi, pydantic_settings" 2>/dev/null; then  # the device image
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .device/wheels/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
# The demo calls `python` (here: the python3 that holds torch) and `sft-eraser`: wrappers in a
# new directory (not links: a link to a virtual environment's python3 leaves that environment,
# and writing to a path some earlier run left as a link writes through it).
shims=$(mktemp -d)
printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v python3)" >"$shims/python"
command -v sft-eraser >/dev/null \
  || printf '#!/bin/sh\nexec python3 -m sft_eraser "$@"\n' >"$shims/sft-eraser"
chmod +x "$shims"/*
export PATH=$shims:$PATH
{
  nvidia-smi -L || echo "no nvidia-smi"
  python3 -c 'import torch, transformers
print("torch", torch.__version__, "transformers", transformers.__version__)
print("cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))' || true
} >"$R/env.txt" 2>&1
cat "$R/env.txt"

[ -f "$W/base/config.json" ] || python3 - "$SHAPE" "$W/base" <<'EOF'
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from training.checkpoint_io import save_model_dir

shape, out = sys.argv[1:]
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(shape), dtype=torch.float32)
tokenizer = AutoTokenizer.from_pretrained(shape)
if tokenizer.pad_token_id is None:
    tokenizer.pad_token = tokenizer.eos_token
save_model_dir(model, tokenizer, out)
print(f"random {model.config.model_type} of {shape}'s shape: {model.num_parameters():,} parameters")
EOF

# The demo's progress bars go to its log; its stage lines and times come back here.
started=$SECONDS
rc=0
WORK=$W SETUP=0 SERVE=0 bash scripts/demo.sh >"$R/demo.log" 2>&1 || rc=$?
grep -a -E '^\[(demo|pipeline) ' "$R/demo.log" || true
cp "$W/timings.txt" "$R/timings.txt" 2>/dev/null || true
echo "demo $((SECONDS - started)) s, exit $rc" | tee -a "$R/timings.txt"
[ "$rc" = 0 ] || {
  tail -c 3000 "$R/demo.log"
  exit "$rc"
}

ln -sfn carrier_all_caps "$W/carrier"  # the layout server_smollm2.py reads
python3 benchmarks/server_smollm2.py --work "$W" --eraser-a eraser_refusal_2 \
  --eraser-b eraser_all_caps --trials 2 --out "$R/server.json" >"$R/server.log" 2>&1 \
  || { tail -c 3000 "$R/server.log"; exit 1; }
tail -n 6 "$R/server.log"

# vLLM (`--engine vllm`, what Dockerfile.vllm serves with): how many greedy replies equal the
# built-in engine's in bf16 (greedy_same_vllm_builtin; bf16 kernels differ, so not all need to)
# and the throughput of both side by side. The lent machines' image has no vLLM, and its wheel
# (with its own CUDA torch) is far over the 64 MiB that travels: this step runs where vllm
# imports (Dockerfile.vllm's image, or a machine with `pip install vllm`), and says so elsewhere.
if python3 -c "import vllm" 2>/dev/null; then
  python3 benchmarks/server_smollm2.py --work "$W" --eraser-a eraser_refusal_2 \
    --eraser-b eraser_all_caps --engine builtin,vllm --vllm-python python3 --trials 2 \
    --out "$R/server_engines.json" >"$R/server_engines.log" 2>&1 \
    || { tail -c 3000 "$R/server_engines.log"; exit 1; }
  tail -n 12 "$R/server_engines.log"
else
  echo "vllm: not installed here, its run skipped" | tee -a "$R/timings.txt"
fi
