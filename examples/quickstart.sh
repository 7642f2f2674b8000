#!/usr/bin/env bash
# The README's main job: set up .venv, then pre-train a small BERT in graph mode (the faster single-process
# mode on CPU) on the embedded demo data
# (data/demo_pretraining: 3,273 training and 299 validation records, seq 128, bert-base-uncased vocab).
# Every setting can be changed by env var; extra arguments are passed on to the training script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"

STEPS=${STEPS:-100}
LAYERS=${LAYERS:-2}
HIDDEN=${HIDDEN:-128}
HEADS=${HEADS:-2}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
DATA=${DATA:-$ROOT/data/demo_pretraining}
RUN_DIR=${RUN_DIR:-$ROOT/output/quickstart-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RUN_DIR"

export PYTHONUNBUFFERED=1
"$ROOT/.venv/bin/python" "$ROOT/run_pretraining.py" \
  --ofrecord_path "$DATA" \
  --num_hidden_layers "$LAYERS" --hidden_size "$HIDDEN" --num_attention_heads "$HEADS" \
  --seq_length 128 --max_predictions_per_seq 20 --vocab_size 30522 \
  --train-batch-size "$BATCH" --train_steps "$STEPS" --lr "$LR" --warmup_proportion 0.1 \
  --loss_print_every_n_iters 10 --val_print_every_n_iters 50 \
  --checkpoint_path "$RUN_DIR/checkpoints" --save_every_n_iters 50 \
  --metrics_file "$RUN_DIR/metrics.jsonl" "$@" 2>&1 | tee "$RUN_DIR/train.log"

PYTHONPATH="$ROOT" "$ROOT/.venv/bin/python" - "$RUN_DIR/train.log" <<'PY'
import sys
from utils.metrics import parse_log
log = parse_log(sys.argv[1])
first, last = log["train"][0], log["train"][-1]
print(f"\nquickstart: total_loss {first['total_loss']:.3f} (step {first['step']}) -> {last['total_loss']:.3f} "
      f"(step {last['step']}); log, metrics and checkpoints in {sys.argv[1].rsplit('/', 1)[0]}")
if last["total_loss"] >= first["total_loss"]:
    sys.exit("quickstart: the loss did not fall")
PY
