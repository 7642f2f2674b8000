#!/usr/bin/env bash
# The reference SQuAD fine-tune of issue D: all-MiniLM-L6-v2 (6 layers, hidden 384, 12 heads) from PyPI,
# 1 epoch at seq 256, doc_stride 128, max_query_length 64, batch 16, lr 5e-5, 10% linear warmup then linear
# decay, AdamW with weight decay 0.01 and clip 1.0 in run_squad.py's default recipe (--optimizer_recipe hf), eager
# mode (on CPU its matrix products run on numpy's BLAS, several times faster than graph mode; pass --mode graph to
# compare); then predict and score dev.
#
#   bash examples/finetune_squad_minilm.sh [v1.1|v2.0] [OUT_DIR] [extra run_squad.py flags]
#
# OUT_DIR (default output/finetune_squad_minilm_<version>) receives predictions.json, nbest_predictions.json,
# null_odds.json (v2.0), eval_results.json (scores, wall time, tokens/s), run_squad.log, the feature cache
# and the fine-tuned model (OUT_DIR/model, loadable by run_infer.py --task qa --model_load_dir OUT_DIR/model).
# Data: the shared SQuAD subsets ($BERT_SHARED_DATA, default ../shared/data). Extra flags go last, so e.g.
# `--num_epoch 0.25` trains a quarter epoch. Measured on 2 CPU cores (2026-12-03, mostly alone): the v1.1
# epoch trains in 31 min (810 tokens/s) and predicts dev in 4 min. v1.1, hf recipe, seed 12345: EM 24.15 /
# F1 38.34; the same run with only the QA head drawn differently (another N(0, 0.02) sample) EM 30.01 / F1 45.44,
# and PyTorch runs 45.0-48.5: the sampled QA-head init moves this 1-epoch recipe by ~7 F1, more than anything
# else we measured. Not yet measured since the fixes: graph mode and v2.0 (before them: every v2.0 answer
# "no answer", exact 51.3). See docs/finetune_and_inference.md#parity-with-hugging-face.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
VERSION="${1:-v1.1}"
OUT_DIR="${2:-$ROOT/output/finetune_squad_minilm_$VERSION}"
shift $(( $# < 2 ? $# : 2 ))
case "$VERSION" in
  v1.1) V2=False ;;
  v2.0) V2=True ;;
  *) echo "version must be v1.1 or v2.0, got '$VERSION'" >&2; exit 2 ;;
esac
SHARED="${BERT_SHARED_DATA:-$ROOT/../shared/data}"
SQUAD="$SHARED/squad/$VERSION"
for f in "$SQUAD/train.json" "$SQUAD/dev.json"; do
  [ -f "$f" ] || { echo "finetune_squad_minilm: $f not found (set BERT_SHARED_DATA)" >&2; exit 1; }
done
MINILM="$(bash "$ROOT/scripts/minilm_dir.sh")"
mkdir -p "$OUT_DIR"
export PYTHONUNBUFFERED=1
"$PY" "$ROOT/run_squad.py" \
  --model=SQuAD \
  --mode=eager \
  --do_train=True \
  --do_eval=True \
  --version_2_with_negative=$V2 \
  --model_load_dir="$MINILM" \
  --vocab_file="$MINILM/vocab.txt" \
  --do_lower_case=True \
  --train_file="$SQUAD/train.json" \
  --predict_file="$SQUAD/dev.json" \
  --seq_length=256 \
  --doc_stride=128 \
  --max_query_length=64 \
  --batch_size_per_device=16 \
  --eval_batch_size_per_device=16 \
  --num_epoch=1 \
  --learning_rate=5e-5 \
  --warmup_proportion=0.1 \
  --weight_decay=0.01 \
  --loss_print_every_n_iter=20 \
  --seed=12345 \
  --output_dir="$OUT_DIR" \
  --log_dir="$OUT_DIR" \
  --save_last_snapshot=True \
  --model_save_dir="$OUT_DIR/model" \
  "$@"
