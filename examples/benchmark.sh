#!/usr/bin/env bash
# Throughput table: every config x mode of utils.benchmark, JSON per run in OUT_DIR (default output/benchmark).
#   CONFIGS="small base quickstart" MODES="eager graph ddp2 global2" STEPS=5 bash examples/benchmark.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
OUT_DIR="${OUT_DIR:-$ROOT/output/benchmark}"
mkdir -p "$OUT_DIR"
cd "$ROOT"
for config in ${CONFIGS:-small base quickstart}; do
  for mode in ${MODES:-eager graph ddp2 global2}; do
    echo "== $config $mode"
    "$ROOT/.venv/bin/python" -m utils.benchmark --config "$config" --mode "$mode" --steps "${STEPS:-5}" \
      --json "$OUT_DIR/$config-$mode.json"
  done
done
