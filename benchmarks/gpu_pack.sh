#!/usr/bin/env bash
# Prepare .device/ for benchmarks/gpu_check.sh, which runs on a lent GPU machine that reaches no
# package index and carries at most 64 MiB: wheels (Python 3.12, x86-64) of the server's packages
# that machine's image lacks, pinned to the versions installed here, and SmolLM2-135M's shape (its
# config and tokenizer from an imported base model, without the weights: the GGUF alone is 94 MiB).
#   bash benchmarks/gpu_pack.sh            # BASE=DIR: the imported model (default runs/demo/base)
set -euo pipefail
cd "$(dirname "$0")/.."
BASE=${BASE:-runs/demo/base}
D=.device
[ -f "$BASE/config.json" ] || {
  echo "no model at $BASE: run scripts/demo.sh, or pass BASE=DIR" >&2
  exit 2
}
exclude=$(git rev-parse --git-path info/exclude)  # .git is a file in a worktree
grep -qx "/$D/" "$exclude" 2>/dev/null || echo "/$D/" >>"$exclude"
rm -rf "$D"
mkdir -p "$D/wheels" "$D/smollm2_shape"
pins=$(python - <<'EOF'
from importlib.metadata import version

names = (
    "fastapi starlette pydantic pydantic_core pydantic-settings python-dotenv annotated-types "
    "annotated-doc typing-inspection uvicorn python-multipart typing_extensions"
).split()
print(" ".join(f"{n}=={version(n)}" for n in names))
EOF
)
# shellcheck disable=SC2086  # one argument per pin
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$D/wheels" $pins
for f in config.json generation_config.json tokenizer.json tokenizer_config.json \
  special_tokens_map.json chat_template.jinja; do
  [ ! -f "$BASE/$f" ] || cp "$BASE/$f" "$D/smollm2_shape/"
done
du -sh "$D"
