#!/usr/bin/env bash
# The GPU proof (issue #13): the real-size Phi-3-Vision through the harness on a lent GPU.
#   OUT=/path scripts/gpu_proof.sh            # GPU: full size, random bf16 weights, ~10 minutes
#   OUT=/path scripts/gpu_proof.sh --tiny     # CPU: tiny-phi3v, the same steps in a minute (CI form)
# Wheels the machine lacks (transformers >= 5.24, trl, bitsandbytes, ...) may be carried in
# ./wheels/: they are installed first, without their dependencies, and the versions used printed.
# Every figure lands in $OUT/gpu_proof.json (written after each step).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d -t gpu-proof-XXXXXX)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}

if compgen -G "wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-deps wheels/*.whl
fi
"$PY" - <<'PY'
from importlib import metadata
for name in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "pydantic", "typer"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} (not installed)")
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} "$PY" scripts/gpu_proof.py --out "$OUT" "$@"
echo "results: $OUT/gpu_proof.json"
