# Sourced by the run_*_pretrain.sh examples: setup, the shared small-model flags, and the run + plot step.
# Environment (defaults): NUM_LAYERS (2), HIDDEN (128), HEADS (2), BATCH (8 per process), STEPS (20), LR (1e-3),
#   PRINT_EVERY (5), VAL_STEPS (5 validation batches, at the end), DATA (data/demo_pretraining: seq 128,
#   20 predictions), SEQ_LENGTH (128), MAX_PREDICTIONS (20), NPROC (2, launched examples),
#   MASTER_PORT (a free port), OUT_DIR (output/examples/<name>-<time>).
# Each run writes OUT_DIR/train.log (rank 0's stdout: the seed's log lines), stderr.log, metrics.jsonl,
# checkpoints/ and loss_curve.png. OUT_DIR is new per run: the trainer never reuses a checkpoint folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
STEPS="${STEPS:-20}"
NPROC="${NPROC:-2}"

# prepare_run NAME: creates OUT_DIR and fills ARGS with the shared training flags.
prepare_run() {
  OUT_DIR="${OUT_DIR:-$ROOT/output/examples/$1-$(date +%Y%m%d-%H%M%S)}"
  mkdir -p "$OUT_DIR"
  ARGS=(--num_hidden_layers "${NUM_LAYERS:-2}" --hidden_size "${HIDDEN:-128}" --num_attention_heads "${HEADS:-2}"
        --intermediate_size "$((4 * ${HIDDEN:-128}))" --seq_length "${SEQ_LENGTH:-128}"
        --max_predictions_per_seq "${MAX_PREDICTIONS:-20}" --ofrecord_path "${DATA:-$ROOT/data/demo_pretraining}"
        --train-batch-size "${BATCH:-8}" --train_steps "$STEPS" --lr "${LR:-1e-3}"
        --loss_print_every_n_iters "${PRINT_EVERY:-5}" --val_print_every_n_iters "$STEPS" --val_steps "${VAL_STEPS:-5}"
        --checkpoint_path "$OUT_DIR/checkpoints" --metrics_file "$OUT_DIR/metrics.jsonl")
  cd "$OUT_DIR"  # the launcher writes OneFlow's logs to ./log
  export PYTHONUNBUFFERED=1
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # python -m utils.launch from OUT_DIR
}

# run_and_plot LABEL COMMAND...: runs the training command with logs tee'd, then draws its loss curve.
run_and_plot() {
  local label="$1"; shift
  set -m  # a launcher leads its own process group: when a rank fails it kills that group (os.killpg)
  "$@" 2> >(tee stderr.log >&2) | tee train.log
  "$PY" "$ROOT/draw_loss_curve.py" train.log --labels "$label" --out loss_curve.png
  echo "outputs in $OUT_DIR"
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
