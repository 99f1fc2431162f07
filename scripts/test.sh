#!/usr/bin/env bash
# Set up, lint, run the fast tests, the slow real-model tests (SmolLM2-135M), then the vLLM
# engine's tests in their own environment (.venv-vllm).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest -q
python -m pytest -q -m slow
bash scripts/setup_vllm.sh
# Required there: a vLLM that does not import fails them instead of skipping them.
SFT_ERASER_REQUIRE_VLLM=1 .venv-vllm/bin/python -m pytest -q -m vllm
