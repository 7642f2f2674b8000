#!/usr/bin/env bash
# BERT pre-training on NNODES machines x NPROC processes (eager --use_ddp or graph --use_consistent).
#
# On a cluster, run this on every node with the same MASTER_ADDR (node 0's IP address, never 127.0.0.1) and port:
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash examples/run_multinode_pretrain.sh     # on 10.0.0.1
#   NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash examples/run_multinode_pretrain.sh     # on the second machine
# Without NODE_RANK it emulates 2 nodes on this machine: node 0 reaches the master through 127.0.0.1 and node 1
# through this machine's LAN address (LAN_ADDR, default: the first one `hostname -I` lists). OneFlow groups
# processes into nodes by that address, so two nodes on one address would clash (see docs/distributed.md).
#
# Environment (defaults): MODE (eager = --use_ddp | graph = --use_consistent), NNODES (2), NPROC (1 per node),
#   MASTER_PORT (29500 on a cluster, a free port locally), NUM_LAYERS (2), HIDDEN (128), HEADS (2),
#   BATCH (4 per process), STEPS (20), LR (1e-3), PRINT_EVERY (5), VAL_STEPS (5), DATA (data/demo_pretraining),
#   SEQ_LENGTH (128), MAX_PREDICTIONS (20), TIMEOUT (900 s, local emulation only),
#   OUT_DIR (output/examples/multinode-<mode>-<time>). Extra arguments go to the training script.
# Writes OUT_DIR/train.log (node 0: rank 0's log lines), node1.log (local emulation), metrics.jsonl, checkpoints/,
# loss_curve.png and OneFlow's logs (when it writes any) in OUT_DIR/log/.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$(dirname "$0")/../scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
MODE="${MODE:-eager}"
case "$MODE" in
  eager) SCRIPT=run_eager_pretraining.py; PARALLEL=--use_ddp ;;
  graph) SCRIPT=run_pretraining.py; PARALLEL=--use_consistent ;;
  *) echo "run_multinode_pretrain: MODE must be eager or graph, got '$MODE'" >&2; exit 2 ;;
esac
OUT_DIR="${OUT_DIR:-$ROOT/output/examples/multinode-$MODE-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT_DIR"
STEPS="${STEPS:-20}"
ARGS=(--num_hidden_layers "${NUM_LAYERS:-2}" --hidden_size "${HIDDEN:-128}" --num_attention_heads "${HEADS:-2}"
      --intermediate_size "$((4 * ${HIDDEN:-128}))" --seq_length "${SEQ_LENGTH:-128}"
      --max_predictions_per_seq "${MAX_PREDICTIONS:-20}" --ofrecord_path "${DATA:-$ROOT/data/demo_pretraining}"
      --train-batch-size "${BATCH:-4}" --train_steps "$STEPS" --lr "${LR:-1e-3}"
      --loss_print_every_n_iters "${PRINT_EVERY:-5}" --val_print_every_n_iters "$STEPS" --val_steps "${VAL_STEPS:-5}"
      --checkpoint_path "$OUT_DIR/checkpoints" --metrics_file "$OUT_DIR/metrics.jsonl" "$PARALLEL" "$@")
launcher() {  # NODE_RANK MASTER_ADDR PORT -> the launcher command in LAUNCH
  LAUNCH=("$PY" -m oneflow.distributed.launch --nnodes "${NNODES:-2}" --node_rank "$1" --nproc_per_node "${NPROC:-1}"
          --master_addr "$2" --master_port "$3" "$ROOT/$SCRIPT" "${ARGS[@]}")
}
cd "$OUT_DIR"  # the launcher writes OneFlow's logs to ./log
export PYTHONUNBUFFERED=1
set -m  # each launcher leads its own process group: when a rank fails it kills that group (os.killpg)

if [ -n "${NODE_RANK:-}" ]; then
  [ -n "${MASTER_ADDR:-}" ] || { echo "run_multinode_pretrain: NODE_RANK given: set MASTER_ADDR to node 0's IP address" >&2; exit 2; }
  launcher "$NODE_RANK" "$MASTER_ADDR" "${MASTER_PORT:-29500}"
  "${LAUNCH[@]}" 2> >(tee stderr.log >&2) | tee train.log
else
  [ "${NNODES:-2}" = 2 ] || { echo "run_multinode_pretrain: the local emulation runs 2 nodes (NNODES=${NNODES})" >&2; exit 2; }
  LAN="${LAN_ADDR:-$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9.]+$' | grep -v '^127\.' | head -n 1 || true)}"
  [ -n "$LAN" ] || { echo "run_multinode_pretrain: no non-loopback IPv4 address found: set LAN_ADDR" >&2; exit 2; }
  PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
  echo "emulating 2 nodes x ${NPROC:-1} processes: node 0 via 127.0.0.1, node 1 via $LAN, port $PORT"
  launcher 0 127.0.0.1 "$PORT"; "${LAUNCH[@]}" > train.log 2> stderr.log &
  NODE0=$!
  launcher 1 "$LAN" "$PORT"; "${LAUNCH[@]}" > node1.log 2> node1.stderr.log &
  NODE1=$!
  (sleep "${TIMEOUT:-900}"; echo "run_multinode_pretrain: timeout, killing both nodes" >&2
   kill -KILL -- "-$NODE0" "-$NODE1" 2>/dev/null) &
  WATCHDOG=$!
  trap 'kill -TERM -- "-$NODE0" "-$NODE1" "-$WATCHDOG" 2>/dev/null || true' EXIT  # no node outlives this script
  tail -n +1 -f train.log --pid "$NODE0" &
  STATUS=0
  wait "$NODE0" || STATUS=$?
  wait "$NODE1" || STATUS=$((STATUS ? STATUS : $?))
  if [ "$STATUS" != 0 ]; then
    echo "run_multinode_pretrain: a node failed (exit $STATUS): see $OUT_DIR/stderr.log and node1.stderr.log" >&2
    exit "$STATUS"
  fi
fi
if [ "${NODE_RANK:-0}" = 0 ]; then
  "$PY" "$ROOT/draw_loss_curve.py" train.log --labels "$MODE ${NNODES:-2} nodes" --out loss_curve.png
fi
echo "outputs in $OUT_DIR"
