#!/usr/bin/env bash
# Best-of-N sampling on a CUDA GPU: this engine vs model.generate, and vLLM vs
# model.generate, each ratio measured against a baseline run in the same process.
#
#   bash bench/gpu_check.sh            # from the repository root, on a GPU machine
#
# vLLM pins its own torch, so it goes into a separate venv (var/vllm-venv, with the
# project's packages visible) rather than into the project's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
ARGS=(--device cuda --dtype bfloat16 --repeats 3 "$@")

"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'; print(torch.cuda.get_device_name())"

echo "== transformers engine vs generate"
"$PY" bench/bon_bench.py "${ARGS[@]}" --json var/bon_gpu_transformers.json

echo "== vLLM vs generate"
VPY="$PY"
if ! "$PY" -c "import vllm" 2>/dev/null; then
  if [ ! -x var/vllm-venv/bin/python ]; then
    "$PY" -m venv --system-site-packages var/vllm-venv
  fi
  VPY=var/vllm-venv/bin/python
  "$VPY" -c "import vllm" 2>/dev/null || "$VPY" -m pip install -q vllm \
    || { echo "could not install vllm; vLLM ratio not measured"; exit 1; }
fi
"$VPY" bench/bon_bench.py "${ARGS[@]}" --backends transformers,vllm \
  --json var/bon_gpu_vllm.json

"$PY" - <<'PY'
import json
for name in ("transformers", "vllm"):
    report = json.load(open(f"var/bon_gpu_{name}.json"))
    ratio = report["ratios"].get(name)
    print(f"{name:12s} vs generate: {ratio:.2f}x" if ratio else f"{name}: no result")
PY
