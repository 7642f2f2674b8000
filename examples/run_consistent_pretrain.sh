#!/usr/bin/env bash
# BERT pre-training in graph mode with global (consistent) tensors: data parallel over NPROC processes on this
# machine, parameters broadcast, each batch split over the ranks. The first step compiles the graph (10-40 s on CPU).
#   bash examples/run_consistent_pretrain.sh [more run_pretraining.py flags]
# Settings by environment: see examples/pretrain_common.sh.
source "$(dirname "$0")/pretrain_common.sh"
prepare_run consistent
run_and_plot "global x$NPROC" "$PY" -m utils.launch --nproc_per_node "$NPROC" --master_addr 127.0.0.1 \
  --master_port "${MASTER_PORT:-$(free_port)}" "$ROOT/run_pretraining.py" "${ARGS[@]}" --use_consistent "$@"
