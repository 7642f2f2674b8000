#!/usr/bin/env bash
# The parity runs of issue H: the MiniLM SQuAD recipe trained by HF/PyTorch and by this project, all scored by
# utils.squad_evaluate on the shared dev split.
#
#   TORCH_PY=/tmp/torchref/bin/python bash examples/pytorch_reference/squad_parity.sh [v1.1|v2.0] OUT_DIR [SEED] [RUNS]
#
# RUNS is any of "ours hf_a hf_b graph" (default "ours hf_a hf_b"):
#   ours   examples/finetune_squad_minilm.sh (eager)                          -> OUT_DIR/ours_eager
#   graph  the same with --mode graph (about 2 h for v1.1 on 2 cores)         -> OUT_DIR/ours_graph
#   hf_a   HF's own windows, labels and post-processing, HF's optimizer loop -> OUT_DIR/hf_a
#   hf_b   HF trained on our exported batches with our recipe ($RECIPE), then predicted by run_squad.py with our features
#          and post-processing (needs OUT_DIR/ours_eager/features from an `ours` run) -> OUT_DIR/hf_b
# TORCH_PY is a Python with torch and transformers (not a project dependency; see squad_reference.py).
# RECIPE (default hf, run_squad.py's default) is the optimizer recipe of the ours, graph and hf_b runs.
# Each run writes its log next to its folder; the scores are printed at the end.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VERSION="${1:-v1.1}"
OUT="${2:?usage: squad_parity.sh [v1.1|v2.0] OUT_DIR [SEED] [RUNS]}"
SEED="${3:-12345}"
RUNS="${4:-ours hf_a hf_b}"
TORCH_PY="${TORCH_PY:?set TORCH_PY to a Python with torch and transformers}"
RECIPE="${RECIPE:-hf}"
bash "$ROOT/scripts/setup_env.sh"
PY="$ROOT/.venv/bin/python"
SQUAD="${BERT_SHARED_DATA:-$ROOT/../shared/data}/squad/$VERSION"
MINILM="$(bash "$ROOT/scripts/minilm_dir.sh")"
V2_FLAG=()
V2=False
if [ "$VERSION" = v2.0 ]; then V2_FLAG=(--version_2_with_negative); V2=True; fi
mkdir -p "$OUT"

score() {  # predictions.json [null_odds.json] -> scores JSON
  "$PY" -m utils.squad_evaluate "$SQUAD/dev.json" "$@"
}

for run in $RUNS; do
  case "$run" in
    ours)
      bash "$ROOT/examples/finetune_squad_minilm.sh" "$VERSION" "$OUT/ours_eager" --seed "$SEED" --optimizer_recipe "$RECIPE" > "$OUT/ours_eager.log" 2>&1 ;;
    graph)
      bash "$ROOT/examples/finetune_squad_minilm.sh" "$VERSION" "$OUT/ours_graph" --seed "$SEED" --mode graph --optimizer_recipe "$RECIPE" \
        > "$OUT/ours_graph.log" 2>&1 ;;
    hf_a)
      "$TORCH_PY" "$ROOT/examples/pytorch_reference/squad_reference.py" --input hf --recipe hf --model_dir "$MINILM" \
        --output_dir "$OUT/hf_a" --train_file "$SQUAD/train.json" --predict_file "$SQUAD/dev.json" --seed "$SEED" \
        "${V2_FLAG[@]}" > "$OUT/hf_a.log" 2>&1 ;;
    hf_b)
      "$PY" "$ROOT/examples/pytorch_reference/export_training_batches.py" "$OUT/ours_eager/features/train" \
        "$OUT/hf_b_batches.npz" --seq_length 256 --batch_size 16 --seed "$SEED"
      "$TORCH_PY" "$ROOT/examples/pytorch_reference/squad_reference.py" --input ours --recipe "$RECIPE" --model_dir "$MINILM" \
        --output_dir "$OUT/hf_b" --features "$OUT/hf_b_batches.npz" --seed "$SEED" > "$OUT/hf_b.log" 2>&1
      "$PY" "$ROOT/run_squad.py" --mode=eager --do_train=False --do_eval=True --version_2_with_negative=$V2 \
        --model_load_dir "$OUT/hf_b/model" --vocab_file "$MINILM/vocab.txt" --do_lower_case=True \
        --predict_file "$SQUAD/dev.json" --eval_data_dir "$OUT/ours_eager/features/eval" --seq_length 256 \
        --doc_stride 128 --max_query_length 64 --eval_batch_size_per_device 16 --output_dir "$OUT/hf_b" \
        --log_dir "$OUT/hf_b" >> "$OUT/hf_b.log" 2>&1 ;;
    *) echo "squad_parity: unknown run '$run' (ours, graph, hf_a, hf_b)" >&2; exit 2 ;;
  esac
done

for run in $RUNS; do
  case "$run" in ours) dir="$OUT/ours_eager" ;; graph) dir="$OUT/ours_graph" ;; *) dir="$OUT/$run" ;; esac
  odds=()
  if [ -f "$dir/null_odds.json" ]; then odds=(--na-prob-file "$dir/null_odds.json"); fi
  echo "== $run ($dir)"
  score "$dir/predictions.json" "${odds[@]}"
done
