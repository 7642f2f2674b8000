#!/usr/bin/env bash
# The README's test command: set up .venv (with the ONNX extra), then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh" --onnx  # the tests cover the optional ONNX extra too
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest tests -q -p no:cacheprovider --durations=15 "$@"
