#!/usr/bin/env bash
# BERT pre-training in eager mode, one process, on the embedded demo data (small model: runs in ~1 min on 2 CPU cores).
#   bash examples/run_eager_pretrain.sh [more run_eager_pretraining.py flags]
# Environment (defaults): NUM_LAYERS (2), HIDDEN (128), HEADS (2), BATCH (8), STEPS (20), LR (1e-3),
#   PRINT_EVERY (5), VAL_STEPS (5 validation batches, at the end), DATA (data/demo_pretraining: seq 128, 20 predictions),
#   SEQ_LENGTH (128), MAX_PREDICTIONS (20), OUT_DIR (output/examples/eager-<time>).
# Writes OUT_DIR/train.log (stdout, the seed's log lines), stderr.log, metrics.jsonl, checkpoints/ and loss_curve.png.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$(dirname "$0")/../scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
OUT_DIR="${OUT_DIR:-$ROOT/output/examples/eager-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
STEPS="${STEPS:-20}"
ARGS=(--num_hidden_layers "${NUM_LAYERS:-2}" --hidden_size "${HIDDEN:-128}" --num_attention_heads "${HEADS:-2}"
      --intermediate_size "$((4 * ${HIDDEN:-128}))" --seq_length "${SEQ_LENGTH:-128}"
      --max_predictions_per_seq "${MAX_PREDICTIONS:-20}" --ofrecord_path "${DATA:-$ROOT/data/demo_pretraining}"
      --train-batch-size "${BATCH:-8}" --train_steps "$STEPS" --lr "${LR:-1e-3}"
      --loss_print_every_n_iters "${PRINT_EVERY:-5}" --val_print_every_n_iters "$STEPS" --val_steps "${VAL_STEPS:-5}"
      --checkpoint_path "$OUT_DIR/checkpoints" --metrics_file "$OUT_DIR/metrics.jsonl")
cd "$OUT_DIR"
export PYTHONUNBUFFERED=1
"$PY" "$ROOT/run_eager_pretraining.py" "${ARGS[@]}" "$@" 2> >(tee stderr.log >&2) | tee train.log
"$PY" "$ROOT/draw_loss_curve.py" train.log --labels eager --out loss_curve.png
echo "outputs in $OUT_DIR"
