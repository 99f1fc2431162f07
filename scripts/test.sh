#!/usr/bin/env bash
# Set up, lint, run the fast tests, then the slow real-model tests (SmolLM2-135M).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .
python -m pytest -q
python -m pytest -q -m slow
