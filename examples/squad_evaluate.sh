#!/usr/bin/env bash
# Scores a SQuAD predictions file with the official-style evaluator (python -m utils.squad_evaluate).
#
#   bash examples/squad_evaluate.sh [v1.1|v2.0] [extra utils.squad_evaluate flags]
#
# Environment (defaults):
#   DATA_FILE   the gold SQuAD JSON ($BERT_SHARED_DATA/squad/<version>/dev.json)
#   PRED_FILE   predictions.json (output/run_squad_<version>/predictions.json, what examples/run_squad.sh writes)
#   NA_PROB_FILE  v2.0: the no-answer odds (null_odds.json next to PRED_FILE, when it is there)
# Prints the scores as JSON; --out-file FILE also writes them.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
VERSION="${1:-v1.1}"
shift $(( $# < 1 ? $# : 1 ))
case "$VERSION" in
  v1.1|v2.0) ;;
  *) echo "squad_evaluate: version must be v1.1 or v2.0, got '$VERSION'" >&2; exit 2 ;;
esac
SHARED="${BERT_SHARED_DATA:-$ROOT/../shared/data}"
DATA_FILE="${DATA_FILE:-$SHARED/squad/$VERSION/dev.json}"
PRED_FILE="${PRED_FILE:-$ROOT/output/run_squad_$VERSION/predictions.json}"
NA_PROB_FILE="${NA_PROB_FILE:-$(dirname "$PRED_FILE")/null_odds.json}"
NA_PROB=()
[ "$VERSION" = v2.0 ] && [ -f "$NA_PROB_FILE" ] && NA_PROB=(--na-prob-file "$NA_PROB_FILE")
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$ROOT/.venv/bin/python" -m utils.squad_evaluate \
  "$DATA_FILE" "$PRED_FILE" "${NA_PROB[@]}" "$@"
