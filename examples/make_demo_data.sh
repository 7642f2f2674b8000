#!/usr/bin/env bash
# Regenerates the embedded demo pre-training set (part-0..3, val/part-0, summary.json) from the shared corpus
# with this repo's own pipeline:  bash examples/make_demo_data.sh [OUT_DIR, default data/demo_pretraining]
# The records come out byte-identical on every run; summary.json differs only in "seconds".
# Slice: documents 113..197 of the corpus (85 WikiText articles), 8% of them held out for validation,
# seq 128 / max_pred 20, one masking pass.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-$ROOT/data/demo_pretraining}" && cd "${1:-$ROOT/data/demo_pretraining}" && pwd)"
PY="$(dirname "$0")/../.venv/bin/python"
PY="$(cd "$(dirname "$PY")" && pwd)/python"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
SHARED="${BERT_SHARED_DATA:-../shared/data}"
CORPUS="$SHARED/corpus/pretrain_corpus_sentences.txt.gz"
VOCAB="$SHARED/vocab/bert-base-uncased-vocab.txt"
for f in "$CORPUS" "$VOCAB"; do
  [ -f "$f" ] || { echo "make_demo_data: $f not found (set BERT_SHARED_DATA to the shared data folder)" >&2; exit 1; }
done
"$PY" -m utils.data.create_pretraining_data \
  --input_file "$CORPUS" --output_dir "$OUT_DIR" --vocab_file "$VOCAB" \
  --skip_documents 113 --max_documents 85 --val_fraction 0.08 \
  --max_seq_length 128 --max_predictions_per_seq 20 --dupe_factor 1 --num_parts 4 \
  --random_seed 12345 --num_workers 2 --overwrite
