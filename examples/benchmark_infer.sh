#!/usr/bin/env bash
# Inference table: the QA model on every serving path (python -m utils.benchmark_infer), rows and markdown in OUT_DIR.
#
#   bash examples/benchmark_infer.sh [QA_CHECKPOINT] [extra utils.benchmark_infer flags]
#
# QA_CHECKPOINT: a fine-tuned QA model, e.g. output/finetune_squad_minilm_v1.1/model (from
# examples/finetune_squad_minilm.sh); without one, a BERT-base shaped model with random weights.
# Environment (defaults):
#   OUT_DIR    output/benchmark_infer
#   TORCH_PY   a Python with torch and transformers: adds PyTorch eager (not a project dependency)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" --onnx
OUT_DIR="${OUT_DIR:-$ROOT/output/benchmark_infer}"
mkdir -p "$OUT_DIR"
MODEL=()
NAME=bert-base
if [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; then
  MODEL=(--model_load_dir "$1"); NAME="$(basename "$(dirname "$(realpath "$1")")")"; shift
fi
TORCH=()
[ -n "${TORCH_PY:-}" ] && TORCH=(--torch_python "$TORCH_PY")
cd "$ROOT"
"$ROOT/.venv/bin/python" -m utils.benchmark_infer "${MODEL[@]}" "${TORCH[@]}" \
  --json "$OUT_DIR/$NAME.json" --markdown "$OUT_DIR/$NAME.md" "$@"
