#!/usr/bin/env bash
# The README's main job: set up .venv, then pre-train a small BERT on the embedded demo data
# (data/demo_pretraining: 2,901 training and 276 validation records, seq 128, bert-base-uncased vocab).
# MODE picks the layout (batch BATCH in total): ddp2 (default: 2 eager DDP processes, the fastest on 2 CPU
# cores, see docs/performance.md), eager (1 process), graph (1 process, nn.Graph), global2 (2 processes, global graph).
# Every setting can be changed by env var; extra arguments are passed on to the training script.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"

MODE=${MODE:-ddp2}
STEPS=${STEPS:-100}
LAYERS=${LAYERS:-2}
HIDDEN=${HIDDEN:-128}
HEADS=${HEADS:-2}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
DATA="$(realpath -m "${DATA:-$ROOT/data/demo_pretraining}")"
RUN_DIR="$(realpath -m "${RUN_DIR:-$ROOT/output/quickstart-$(date +%Y%m%d-%H%M%S)}")"
mkdir -p "$RUN_DIR"

PY="$ROOT/.venv/bin/python"
launch2() {  # 2 processes on this machine, each with half the batch: the same global batch of BATCH
  local port
  port=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  BATCH=$((BATCH / 2))
  LAUNCH=("$PY" -m utils.launch --nproc_per_node 2 --master_port "$port" "$ROOT/$1")
  EXTRA=("$2")
}
case "$MODE" in
  eager) LAUNCH=("$PY" "$ROOT/run_eager_pretraining.py"); EXTRA=() ;;
  graph) LAUNCH=("$PY" "$ROOT/run_pretraining.py"); EXTRA=() ;;
  ddp2) launch2 run_eager_pretraining.py --use_ddp ;;
  global2) launch2 run_pretraining.py --use_consistent ;;
  *) echo "quickstart: MODE must be eager, graph, ddp2 or global2, got '$MODE'" >&2; exit 2 ;;
esac

export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # python -m utils.launch from the run directory
cd "$RUN_DIR"  # the distributed launcher writes OneFlow's logs to ./log
set -m  # the launcher leads its own process group: when a rank fails it kills that group (os.killpg)
"${LAUNCH[@]}" "${EXTRA[@]}" \
  --ofrecord_path "$DATA" \
  --num_hidden_layers "$LAYERS" --hidden_size "$HIDDEN" --num_attention_heads "$HEADS" \
  --seq_length 128 --max_predictions_per_seq 20 --vocab_size 30522 \
  --train-batch-size "$BATCH" --train_steps "$STEPS" --lr "$LR" --warmup_proportion 0.1 \
  --loss_print_every_n_iters 10 --val_print_every_n_iters 50 \
  --checkpoint_path "$RUN_DIR/checkpoints" --save_every_n_iters 50 \
  --metrics_file "$RUN_DIR/metrics.jsonl" "$@" 2>&1 | tee "$RUN_DIR/train.log"

"$PY" - "$RUN_DIR/train.log" <<'PY'
import sys
from utils.metrics import parse_log
log = parse_log(sys.argv[1])
first, last = log["train"][0], log["train"][-1]
run_dir = sys.argv[1].rsplit('/', 1)[0]
print(f"\nquickstart: total_loss {first['total_loss']:.3f} (step {first['step']}) -> {last['total_loss']:.3f} "
      f"(step {last['step']}); log, metrics and checkpoints in {run_dir}")
if last["total_loss"] >= first["total_loss"]:
    sys.exit("quickstart: the loss did not fall")
print(f"fill in a [MASK] with the trained model: TASK=fill_mask MODEL_PATH={run_dir}/checkpoints bash examples/infer.sh")
PY
