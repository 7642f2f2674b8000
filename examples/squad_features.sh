#!/usr/bin/env bash
# Builds SQuAD features once, to share between runs (python -m utils.data.squad_features): the training features of
# train.json and the eval features (with eval_features.json for post-processing) of dev.json. A few seconds each on
# the shared sets; a second run with the same inputs and settings reuses them (pass --force to rebuild).
#
#   bash examples/squad_features.sh [v1.1|v2.0] [extra utils.data.squad_features flags]
#
# Environment (defaults):
#   SQUAD_DIR        folder with train.json and dev.json ($BERT_SHARED_DATA/squad/<version>)
#   VOCAB_FILE       WordPiece vocab ($BERT_SHARED_DATA/vocab/bert-base-uncased-vocab.txt)
#   MAX_SEQ_LENGTH (384), DOC_STRIDE (128), MAX_QUERY_LENGTH (64)
#   OUT_DIR          output/squad_features_<version>: writes OUT_DIR/train and OUT_DIR/dev
# run_squad.py reads them with --train_data_dir OUT_DIR/train --eval_data_dir OUT_DIR/dev.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
VERSION="${1:-v1.1}"
shift $(( $# < 1 ? $# : 1 ))
case "$VERSION" in
  v1.1) V2=() ;;
  v2.0) V2=(--version_2_with_negative) ;;
  *) echo "squad_features: version must be v1.1 or v2.0, got '$VERSION'" >&2; exit 2 ;;
esac
SHARED="${BERT_SHARED_DATA:-$ROOT/../shared/data}"
SQUAD_DIR="${SQUAD_DIR:-$SHARED/squad/$VERSION}"
VOCAB_FILE="${VOCAB_FILE:-$SHARED/vocab/bert-base-uncased-vocab.txt}"
OUT_DIR="${OUT_DIR:-$ROOT/output/squad_features_$VERSION}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
for split in train dev; do
  TRAINING=()
  [ "$split" = train ] && TRAINING=(--is_training)
  "$ROOT/.venv/bin/python" -m utils.data.squad_features --input_file "$SQUAD_DIR/$split.json" \
    --vocab_file "$VOCAB_FILE" --output_dir "$OUT_DIR/$split" "${TRAINING[@]}" "${V2[@]}" \
    --max_seq_length "${MAX_SEQ_LENGTH:-384}" --doc_stride "${DOC_STRIDE:-128}" \
    --max_query_length "${MAX_QUERY_LENGTH:-64}" "$@"
done
