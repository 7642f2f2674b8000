#!/usr/bin/env bash
# BERT pre-training on NNODES machines x NPROC processes (eager --use_ddp or graph --use_consistent).
#
# On a cluster, run this on every node with the same MASTER_ADDR (node 0's IP address, never 127.0.0.1) and port:
#   NODE_RANK=0 MASTER_ADDR=10.0.0.1 bash examples/run_multinode_pretrain.sh     # on 10.0.0.1
#   NODE_RANK=1 MASTER_ADDR=10.0.0.1 bash examples/run_multinode_pretrain.sh     # on the second machine
# Without NODE_RANK it emulates 2 nodes on this machine (needs root and iproute2's `ip`): it creates a network
# namespace bert-node1-<pid> joined to this one by a veth pair with addresses from 10.231.0.0/16 (one /30 chosen by
# pid). Node 0 runs here and node 1 inside the namespace, both with --master_addr set to this side of the veth, so
# they reach the master from two addresses and OneFlow, which groups processes into nodes by that address, sees
# 2 nodes (see docs/distributed.md). No traffic leaves loopback and the veth pair; both are removed on exit.
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
  LAUNCH=("$PY" -m utils.launch --nnodes "${NNODES:-2}" --node_rank "$1" --nproc_per_node "${NPROC:-1}"
          --master_addr "$2" --master_port "$3" "$ROOT/$SCRIPT" "${ARGS[@]}")
}
cd "$OUT_DIR"  # the launcher writes OneFlow's logs to ./log
export PYTHONUNBUFFERED=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # python -m utils.launch from OUT_DIR
set -m  # each launcher leads its own process group: when a rank fails it kills that group (os.killpg)

if [ -n "${NODE_RANK:-}" ]; then
  [ -n "${MASTER_ADDR:-}" ] || { echo "run_multinode_pretrain: NODE_RANK given: set MASTER_ADDR to node 0's IP address" >&2; exit 2; }
  launcher "$NODE_RANK" "$MASTER_ADDR" "${MASTER_PORT:-29500}"
  "${LAUNCH[@]}" 2> >(tee stderr.log >&2) | tee train.log
else
  [ "${NNODES:-2}" = 2 ] || { echo "run_multinode_pretrain: the local emulation runs 2 nodes (NNODES=${NNODES})" >&2; exit 2; }
  [ "$(id -u)" = 0 ] || { echo "run_multinode_pretrain: the local emulation creates a network namespace: run it as root" >&2; exit 2; }
  IP="$(PATH="$PATH:/usr/sbin:/sbin" command -v ip || true)"
  [ -n "$IP" ] || { echo "run_multinode_pretrain: the local emulation needs iproute2's ip command" >&2; exit 2; }
  NS="bert-node1-$$"; HOST_LINK="bn$$h"; NS_LINK="bn$$n"
  BLOCK=$(( ($$ % 16384) * 4 ))  # one /30 of 10.231.0.0/16, so two emulations at once do not share addresses
  HOST_ADDR="10.231.$((BLOCK / 256)).$((BLOCK % 256 + 1))"; NS_ADDR="10.231.$((BLOCK / 256)).$((BLOCK % 256 + 2))"
  NODE0=; NODE1=; WATCHDOG=
  cleanup() {  # no node, namespace or veth outlives this script
    for pgid in $NODE0 $NODE1 $WATCHDOG; do kill -KILL -- "-$pgid" 2>/dev/null || true; done
    "$IP" link del "$HOST_LINK" 2>/dev/null || true  # removes its peer too
    "$IP" netns del "$NS" 2>/dev/null || true
  }
  trap cleanup EXIT
  trap 'exit 130' INT TERM
  "$IP" netns add "$NS"
  "$IP" link add "$HOST_LINK" type veth peer name "$NS_LINK"
  "$IP" link set "$NS_LINK" netns "$NS"
  "$IP" addr add "$HOST_ADDR/30" dev "$HOST_LINK"
  "$IP" link set "$HOST_LINK" up
  "$IP" -n "$NS" addr add "$NS_ADDR/30" dev "$NS_LINK"
  "$IP" -n "$NS" link set "$NS_LINK" up
  "$IP" -n "$NS" link set lo up
  unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY  # gRPC would send to a proxy
  PORT="${MASTER_PORT:-$(HOST_ADDR="$HOST_ADDR" "$PY" -c 'import os, socket
s = socket.socket(); s.bind((os.environ["HOST_ADDR"], 0)); print(s.getsockname()[1])')}"
  echo "emulating 2 nodes x ${NPROC:-1} processes: node 0 here at $HOST_ADDR, node 1 in network namespace $NS at" \
       "$NS_ADDR, master $HOST_ADDR:$PORT"
  launcher 0 "$HOST_ADDR" "$PORT"; "${LAUNCH[@]}" > train.log 2> stderr.log &
  NODE0=$!
  launcher 1 "$HOST_ADDR" "$PORT"; "$IP" netns exec "$NS" "${LAUNCH[@]}" > node1.log 2> node1.stderr.log &
  NODE1=$!
  (sleep "${TIMEOUT:-900}"; echo "run_multinode_pretrain: timeout, killing both nodes" >&2
   kill -KILL -- "-$NODE0" "-$NODE1" 2>/dev/null) &
  WATCHDOG=$!
  disown "$WATCHDOG"  # killed at exit: no job report
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
