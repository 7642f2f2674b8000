#!/usr/bin/env bash
# Create .venv at the repo root from a Python 3.10 interpreter and install requirements.txt.
# Idempotent: a second run only checks that the venv is up to date with requirements.txt.
# --onnx also installs the optional ONNX extra (requirements-onnx.txt), idempotent the same way.
# OneFlow 0.9.0 publishes wheels for CPython <= 3.10 only.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
STAMP="$VENV/.requirements.sha256"
ONNX_STAMP="$VENV/.requirements-onnx.sha256"

WITH_ONNX=0
for arg in "$@"; do
  case "$arg" in
    --onnx) WITH_ONNX=1 ;;
    *) echo "setup_env: unknown argument $arg (the only option is --onnx)" >&2; exit 2 ;;
  esac
done

install_onnx() {
  # requirements.txt as constraints: the extra must not move oneflow's numpy / protobuf pins.
  local want_onnx; want_onnx="$(cat "$ROOT/requirements.txt" "$ROOT/requirements-onnx.txt" | sha256sum | cut -d' ' -f1)"
  [ -f "$ONNX_STAMP" ] && [ "$(cat "$ONNX_STAMP")" = "$want_onnx" ] && return 0
  "$VENV/bin/python" -m pip install --progress-bar off -c "$ROOT/requirements.txt" -r "$ROOT/requirements-onnx.txt"
  "$VENV/bin/python" -c 'import onnx, onnxruntime, importlib.util as u; assert u.find_spec("oneflow_onnx")' ||
    { echo "setup_env: the ONNX extra did not install in $VENV" >&2; exit 1; }
  echo "$want_onnx" > "$ONNX_STAMP"
  echo "setup_env: ONNX extra ready"
}

python_is_usable() {
  # Run the candidate: on some images python3.10 on PATH is a pyenv shim that fails.
  "$1" -c 'import sys, venv; sys.exit(0 if (3, 7) <= sys.version_info[:2] <= (3, 10) else 1)' >/dev/null 2>&1
}

find_python() {
  local candidates=()
  [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
  candidates+=(python3.10)
  if command -v pyenv >/dev/null 2>&1; then
    local root; root="$(pyenv root)"
    for p in "$root"/versions/3.10.*/bin/python3.10; do [ -x "$p" ] && candidates+=("$p"); done
  fi
  for p in "$HOME"/.pyenv/versions/3.10.*/bin/python3.10 /usr/bin/python3.10 /usr/local/bin/python3.10; do
    [ -x "$p" ] && candidates+=("$p")
  done
  for c in "${candidates[@]}"; do
    if python_is_usable "$c"; then command -v "$c" || echo "$c"; return 0; fi
  done
  return 1
}

want="$(sha256sum "$ROOT/requirements.txt" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  if [ "$WITH_ONNX" = 1 ]; then install_onnx; fi
  exit 0
fi

if ! PY="$(find_python)"; then
  echo "setup_env: no usable Python <= 3.10 found (tried \$PYTHON, python3.10 on PATH, \$(pyenv root)/versions/3.10.*)." >&2
  echo "setup_env: OneFlow 0.9.0 has wheels only for CPython <= 3.10; install one and/or set PYTHON=/path/to/python3.10." >&2
  exit 1
fi
echo "setup_env: using $PY ($("$PY" --version 2>&1))"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --progress-bar off -r "$ROOT/requirements.txt"
"$VENV/bin/python" -c 'import oneflow' || { echo "setup_env: 'import oneflow' failed in $VENV" >&2; exit 1; }
echo "$want" > "$STAMP"
echo "setup_env: ready: $VENV"
if [ "$WITH_ONNX" = 1 ]; then install_onnx; fi
