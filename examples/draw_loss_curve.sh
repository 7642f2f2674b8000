#!/usr/bin/env bash
# Draws the loss and accuracy curves of one or more training logs; with two logs, also their difference.
#
#   bash examples/draw_loss_curve.sh [LOG ...] [--labels NAME ...] [--out FILE.png]
#
# LOG: a training log (the seed's line format, e.g. train.log), a --metrics_file JSON-lines file, or a launcher log
# directory. Without one, the train.log of the newest output/quickstart-<time>/ run.
# Environment (defaults): OUT (output/loss_curve.png).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
if [ $# -eq 0 ]; then
  LOG="$(ls -td "$ROOT"/output/quickstart-*/train.log 2>/dev/null | head -n 1)"
  [ -n "$LOG" ] || { echo "draw_loss_curve: no LOG given and no output/quickstart-*/train.log: run" \
                          "bash examples/quickstart.sh first" >&2; exit 2; }
  set -- "$LOG"
fi
mkdir -p "$ROOT/output"
"$ROOT/.venv/bin/python" "$ROOT/draw_loss_curve.py" --out "${OUT:-$ROOT/output/loss_curve.png}" "$@"
