#!/usr/bin/env bash
# BERT pre-training in eager mode with DistributedDataParallel: NPROC processes on this machine, each reading its own
# shard of the demo data. Works on CPU (the launcher gives each process one OpenMP thread).
#   bash examples/run_ddp_pretrain.sh [more run_eager_pretraining.py flags]
# Environment (defaults): NPROC (2), MASTER_PORT (a free port), NUM_LAYERS (2), HIDDEN (128), HEADS (2),
#   BATCH (4 per process: global batch BATCH x NPROC), STEPS (20), LR (1e-3), PRINT_EVERY (5), VAL_STEPS (5),
#   DATA (data/demo_pretraining), SEQ_LENGTH (128), MAX_PREDICTIONS (20), OUT_DIR (output/examples/ddp-<time>).
# Writes OUT_DIR/train.log (rank 0's stdout), stderr.log, metrics.jsonl, checkpoints/, loss_curve.png and the
# launcher's OneFlow logs (when it writes any) in OUT_DIR/log/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$(dirname "$0")/../scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
OUT_DIR="${OUT_DIR:-$ROOT/output/examples/ddp-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
STEPS="${STEPS:-20}"
PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
ARGS=(--num_hidden_layers "${NUM_LAYERS:-2}" --hidden_size "${HIDDEN:-128}" --num_attention_heads "${HEADS:-2}"
      --intermediate_size "$((4 * ${HIDDEN:-128}))" --seq_length "${SEQ_LENGTH:-128}"
      --max_predictions_per_seq "${MAX_PREDICTIONS:-20}" --ofrecord_path "${DATA:-$ROOT/data/demo_pretraining}"
      --train-batch-size "${BATCH:-4}" --train_steps "$STEPS" --lr "${LR:-1e-3}"
      --loss_print_every_n_iters "${PRINT_EVERY:-5}" --val_print_every_n_iters "$STEPS" --val_steps "${VAL_STEPS:-5}"
      --checkpoint_path "$OUT_DIR/checkpoints" --metrics_file "$OUT_DIR/metrics.jsonl" --use_ddp)
cd "$OUT_DIR"  # the launcher writes OneFlow's logs to ./log
export PYTHONUNBUFFERED=1
set -m  # the launcher leads its own process group: when a rank fails it kills that group (os.killpg)
"$PY" -m oneflow.distributed.launch --nproc_per_node "${NPROC:-2}" --master_addr 127.0.0.1 --master_port "$PORT" \
  "$ROOT/run_eager_pretraining.py" "${ARGS[@]}" "$@" 2> >(tee stderr.log >&2) | tee train.log
"$PY" "$ROOT/draw_loss_curve.py" train.log --labels "ddp x${NPROC:-2}" --out loss_curve.png
echo "outputs in $OUT_DIR"
