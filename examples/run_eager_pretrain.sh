#!/usr/bin/env bash
# BERT pre-training in eager mode, one process, on the embedded demo data (small model: ~1 min on 2 CPU cores).
#   bash examples/run_eager_pretrain.sh [more run_eager_pretraining.py flags]
# Settings by environment: see examples/pretrain_common.sh.
source "$(dirname "$0")/pretrain_common.sh"
prepare_run eager
run_and_plot eager "$PY" "$ROOT/run_eager_pretraining.py" "${ARGS[@]}" "$@"
