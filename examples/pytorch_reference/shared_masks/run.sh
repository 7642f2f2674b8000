#!/usr/bin/env bash
# Issue H: our fine-tune and HF's, both with the same dropout masks, QA-head init and batches (shared_masks.py).
#
#   TORCH_PY=/path/torch-venv/python bash examples/pytorch_reference/shared_masks/run.sh FEATURES_DIR BATCHES_NPZ OUT_DIR
#
# FEATURES_DIR is the features/ folder of an examples/finetune_squad_minilm.sh v1.1 run (train/ and eval/);
# BATCHES_NPZ its batches from export_training_batches.py (--seed 12345). Each run logs next to OUT_DIR/ours and
# OUT_DIR/torch; the torch model is scored by run_squad.py with our features and post-processing.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
HERE="$ROOT/examples/pytorch_reference/shared_masks"
FEATURES="${1:?FEATURES_DIR}"; BATCHES="${2:?BATCHES_NPZ}"; OUT="${3:?OUT_DIR}"
TORCH_PY="${TORCH_PY:?set TORCH_PY to a Python with torch and transformers}"
PY="$ROOT/.venv/bin/python"
MINILM="$(bash "$ROOT/scripts/minilm_dir.sh")"
DEV="${BERT_SHARED_DATA:-$ROOT/../shared/data}/squad/v1.1/dev.json"
COMMON=(--mode=eager --vocab_file="$MINILM/vocab.txt" --do_lower_case=True --predict_file="$DEV"
        --eval_data_dir="$FEATURES/eval" --seq_length=256 --doc_stride=128 --max_query_length=64
        --eval_batch_size_per_device=16)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
"$PY" "$HERE/ours_run.py" --model=SQuAD --do_train=True --do_eval=True "${COMMON[@]}" --model_load_dir="$MINILM" \
  --train_data_dir="$FEATURES/train" --batch_size_per_device=16 --num_epoch=1 --learning_rate=5e-5 \
  --warmup_proportion=0.1 --weight_decay=0.01 --seed=12345 --optimizer_recipe=hf \
  --output_dir="$OUT/ours" --log_dir="$OUT/ours" > "$OUT/ours.log" 2>&1 &
"$TORCH_PY" "$HERE/torch_run.py" --input ours --recipe hf --model_dir "$MINILM" --output_dir "$OUT/torch" \
  --features "$BATCHES" --seed 12345 > "$OUT/torch.log" 2>&1
"$PY" "$ROOT/run_squad.py" --do_train=False --do_eval=True "${COMMON[@]}" --model_load_dir "$OUT/torch/model" \
  --output_dir "$OUT/torch/eval" --log_dir "$OUT/torch/eval" >> "$OUT/torch.log" 2>&1
wait
