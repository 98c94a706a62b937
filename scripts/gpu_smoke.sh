#!/usr/bin/env bash
# GPU smoke test: one flagship eval run on a GPU machine whose HF cache already holds the weights.
# Prints samples/s (from the run's metrics.json wall_s) and peak GPU memory (nvidia-smi, sampled).
#   MODEL=phi-3-vision DATA=synthetic N=64 BS=8 scripts/gpu_smoke.sh
set -euo pipefail

MODEL=${MODEL:-phi-3-vision}
DATA=${DATA:-synthetic}
N=${N:-64}
BS=${BS:-8}
OUT=${OUT:-$(mktemp -d -t gpu-smoke-XXXXXX)}
HARNESS=${HARNESS:-harness}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
base=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)

# Sample used GPU memory twice a second; the peak is kept in a file the monitor rewrites.
echo "$base" >"$OUT/peak_mib"
(
  peak=$base
  while sleep 0.5; do
    used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)
    if [ "$used" -gt "$peak" ]; then peak=$used; echo "$peak" >"$OUT/peak_mib"; fi
  done
) &
monitor=$!
trap 'kill "$monitor" 2>/dev/null || true' EXIT

start=$(date +%s.%N)
$HARNESS run --task burberry --model "$MODEL" --data "$DATA" --limit "$N" --batch-size "$BS" \
  --output-dir "$OUT/runs" --fresh
end=$(date +%s.%N)

metrics=$(ls -t "$OUT"/runs/*/metrics.json | head -n1)
python - "$metrics" "$start" "$end" "$(cat "$OUT/peak_mib")" "$base" <<'PY'
import json, sys

metrics, start, end, peak, base = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
m = json.load(open(metrics))
wall = m.get("wall_s") or (end - start)
print(f"model {m['model']}: {m['n']} samples, {m.get('n_errors', 0)} errors, {m.get('n_parse_failures', 0)} parse failures")
print(f"samples/s: {m['n'] / wall:.2f} (eval loop {wall:.1f} s; whole command incl. model load {end - start:.1f} s)")
print(f"peak GPU memory used: {peak} MiB ({peak - base} MiB above the {base} MiB in use before)")
print(f"metrics: {metrics}")
PY
