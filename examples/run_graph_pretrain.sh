#!/usr/bin/env bash
# BERT pre-training in graph mode (nn.Graph), one process, on the embedded demo data. The first step compiles the
# graph (10-40 s on CPU).
#   bash examples/run_graph_pretrain.sh [more run_pretraining.py flags]
# Settings by environment: see examples/pretrain_common.sh.
source "$(dirname "$0")/pretrain_common.sh"
prepare_run graph
run_and_plot graph "$PY" "$ROOT/run_pretraining.py" "${ARGS[@]}" "$@"
