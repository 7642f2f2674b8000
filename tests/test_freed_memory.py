"""utils/freed_memory.py: freed activations stay mapped, so the next step touches no fresh pages."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Like a step's activations: 8 arrays of 4 MB allocated, touched, then all freed, 10 times; prints the minor
# page faults of the last 9 rounds.
PROBE = """
import utils, numpy as np
def minor_faults():
    return int(open('/proc/self/stat').read().split(')')[1].split()[7])
def touch_and_free():
    arrays = [np.empty(1 << 20, np.float32) for _ in range(8)]
    for a in arrays:
        a.fill(1.0)
    del arrays
touch_and_free()
start = minor_faults()
for _ in range(9):
    touch_and_free()
print(minor_faults() - start)
"""


def faults_of_nine_rounds(keep):
    env = dict(os.environ, BERT_KEEP_FREED_MEMORY="1" if keep else "0")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_freed_memory_is_reused_without_page_faults_and_the_switch_restores_glibc_defaults():
    pages_per_round = (32 << 20) // 4096
    assert faults_of_nine_rounds(keep=True) < pages_per_round // 10
    # glibc's default returns the freed top of the heap to the kernel: here about half of each round's pages
    # (36,680 faults in 9 rounds of 8,192 pages) come back as fresh, zeroed pages.
    assert faults_of_nine_rounds(keep=False) >= 9 * pages_per_round // 4


def test_keep_freed_memory_reports_what_it_did(monkeypatch):
    from utils import freed_memory

    monkeypatch.setenv("BERT_KEEP_FREED_MEMORY", "0")
    assert freed_memory.keep_freed_memory() is False
    monkeypatch.setenv("BERT_KEEP_FREED_MEMORY", "1")
    assert freed_memory.keep_freed_memory() is True
