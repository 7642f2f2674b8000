#!/usr/bin/env python
"""PyTorch eager inference of HF BertForQuestionAnswering on the batches utils/benchmark_infer.py wrote.

Run by `python -m utils.benchmark_infer --torch_python PY`, which exports the benchmarked model to --model_dir
(HF format) and each batch to --batches_dir/batch_B_S.npz. For each batch it writes the start/end logits beside it
(torch_logits_B_S.npy, so the benchmark can check that PyTorch computed the same model) and the per-call
latencies to --json. Not part of the project's environment: run it in a separate venv with torch and transformers.
"""
import argparse
import glob
import json
import os
import re
import time

import numpy as np
import torch
from transformers import BertForQuestionAnswering

THREADS = 2  # both cores, as OneFlow's numpy BLAS and ONNX Runtime's ort2 use
MIN_TIMED = 3


def time_calls(model, batch, iterations, max_seconds, warmup):
    inputs = {"input_ids": torch.from_numpy(batch["input_ids"]).long(),
              "attention_mask": torch.from_numpy(batch["input_mask"]).long(),
              "token_type_ids": torch.from_numpy(batch["segment_ids"]).long()}
    with torch.inference_mode():
        for _ in range(max(warmup, 1)):
            output = model(**inputs)
        latencies = []
        budget_end = time.time() + max_seconds
        while len(latencies) < iterations and (len(latencies) < MIN_TIMED or time.time() < budget_end):
            start = time.perf_counter()
            output = model(**inputs)
            latencies.append(time.perf_counter() - start)
    return latencies, np.stack([output.start_logits.numpy(), output.end_logits.numpy()])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--batches_dir", required=True)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--max_seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()

    torch.set_num_threads(THREADS)
    model = BertForQuestionAnswering.from_pretrained(args.model_dir).eval()
    rows = []
    for path in sorted(glob.glob(os.path.join(args.batches_dir, "batch_*.npz"))):
        batch_size, seq_length = map(int, re.match(r"batch_(\d+)_(\d+)\.npz", os.path.basename(path)).groups())
        latencies, logits = time_calls(model, dict(np.load(path)), args.iterations, args.max_seconds, args.warmup)
        np.save(os.path.join(args.batches_dir, f"torch_logits_{batch_size}_{seq_length}.npy"), logits)
        rows.append({"batch_size": batch_size, "seq_length": seq_length, "latencies": latencies,
                     "torch": torch.__version__, "attention": model.config._attn_implementation})
    with open(args.json, "w") as f:
        json.dump(rows, f)


if __name__ == "__main__":
    main()
