#!/usr/bin/env bash
# BERT pre-training in eager mode with DistributedDataParallel: NPROC processes on this machine, each reading its own
# shard of the demo data (global batch BATCH x NPROC). On CPU the launcher gives each process one OpenMP thread.
#   bash examples/run_ddp_pretrain.sh [more run_eager_pretraining.py flags]
# Settings by environment: see examples/pretrain_common.sh.
source "$(dirname "$0")/pretrain_common.sh"
prepare_run ddp
run_and_plot "ddp x$NPROC" "$PY" -m utils.launch --nproc_per_node "$NPROC" --master_addr 127.0.0.1 \
  --master_port "${MASTER_PORT:-$(free_port)}" "$ROOT/run_eager_pretraining.py" "${ARGS[@]}" --use_ddp "$@"
