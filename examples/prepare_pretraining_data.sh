#!/usr/bin/env bash
# Raw text to pre-training records in one command:
#   bash examples/prepare_pretraining_data.sh INPUT OUT_DIR [VOCAB_FILE]
# INPUT: a MediaWiki dump (.xml.bz2), a .txt / .txt.gz file (one paragraph or sentence per line, a blank line
# between documents) or a folder of them. VOCAB_FILE defaults to the bert-base-uncased vocab.txt of the
# shared data folder. Writes OUT_DIR/part-*, OUT_DIR/val/part-* and OUT_DIR/summary.json.
# Environment (defaults): SEQ_LENGTH (128), MAX_PREDICTIONS_PER_SEQ (20), DUPE_FACTOR (10), NUM_PARTS (8),
# VAL_FRACTION (0.01), NUM_WORKERS (all cores), RANDOM_SEED (12345), DO_WHOLE_WORD_MASK (0).
# Phase 2 of the BERT recipe: SEQ_LENGTH=512 MAX_PREDICTIONS_PER_SEQ=80. Extra arguments after the third are
# passed to python -m utils.data.prepare (see --help), e.g. --overwrite or --no-do_lower_case; they may also
# follow OUT_DIR directly when VOCAB_FILE is left to its default.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash $0 INPUT OUT_DIR [VOCAB_FILE] [extra utils.data.prepare flags]" >&2
  exit 2
fi
INPUT="$1"; OUT_DIR="$2"; shift 2
VOCAB_ARGS=()
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then  # an optional VOCAB_FILE; "" also means the default
  [ -n "$1" ] && VOCAB_ARGS=(--vocab_file "$1")
  shift
fi
PY="$(dirname "$0")/../.venv/bin/python"
bash "$(dirname "$0")/../scripts/setup_env.sh"
WWM=()
[ "${DO_WHOLE_WORD_MASK:-0}" = "1" ] && WWM=(--do_whole_word_mask)
PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m utils.data.prepare "$INPUT" "$OUT_DIR" \
  "${VOCAB_ARGS[@]}" \
  --max_seq_length "${SEQ_LENGTH:-128}" \
  --max_predictions_per_seq "${MAX_PREDICTIONS_PER_SEQ:-20}" \
  --dupe_factor "${DUPE_FACTOR:-10}" \
  --num_parts "${NUM_PARTS:-8}" \
  --val_fraction "${VAL_FRACTION:-0.01}" \
  --num_workers "${NUM_WORKERS:-$(nproc)}" \
  --random_seed "${RANDOM_SEED:-12345}" \
  "${WWM[@]}" "$@"
