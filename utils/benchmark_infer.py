"""Inference speed of the SQuAD QA model on every serving path, side by side from one run.

    python3 -m utils.benchmark_infer [--model_load_dir DIR] [--batch_size 1 16] [--seq_length 128 384]
        [--paths eager eager_no_blas graph ort1 ort2] [--torch_python PY] [--iterations N] [--json FILE]

Paths: OneFlow eager with the matrix products on numpy's BLAS (`eager`) and on OneFlow's own kernels
(`eager_no_blas`), OneFlow `graph` (nn.Graph), and ONNX Runtime with 1 and 2 intra-op threads (`ort1`, `ort2`,
from a file written once by utils.export_onnx; needs the ONNX extra). `--torch_python` adds PyTorch eager (HF
BertForQuestionAnswering, 2 threads) from a separate venv: examples/pytorch_reference/bench_torch_infer.py runs
there on the same weights (exported to HF format) and the same batches.

Without --model_load_dir the model is BERT-base shaped (the model-shape flags' defaults) with random weights; the
speed doesn't depend on the values. Each shape is one random full-length batch (no padding). Per path: --warmup
calls (a graph compiles in the first), then timed calls until --iterations or --max_seconds, at least 3. It reports
sequences/s (batch size / median latency, robust to a busy machine's spikes) and latency p50/p95 per call, plus each
path's largest |logit| difference from OneFlow eager on that batch: a fast path that computes something else shows.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import oneflow as flow

from modeling import BertForQuestionAnswering
from run_infer import TASKS
from utils import config as cfg
from utils import interrupts, numpy_blas
from utils.cli import argument_parser
from utils.runtime import Placement, build_bert, build_runner

PATHS = ("eager", "eager_no_blas", "graph", "ort1", "ort2")
QA = TASKS["qa"][1]
TORCH_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "examples", "pytorch_reference", "bench_torch_infer.py")
MIN_TIMED = 3


def random_batch(batch_size, seq_length, vocab_size, seed=0):
    """A full-length QA batch: [CLS] question [SEP] context [SEP] shaped segments, every position attended."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(1000, vocab_size, (batch_size, seq_length)).astype(np.int32)
    segment_ids = np.zeros((batch_size, seq_length), np.int32)
    segment_ids[:, seq_length // 4:] = 1
    return {"input_ids": input_ids, "input_mask": np.ones_like(input_ids), "segment_ids": segment_ids}


def time_calls(run, batch, iterations, max_seconds, warmup):
    """Latencies (s) of timed calls after `warmup` untimed ones (at least 1), and the last call's outputs."""
    for _ in range(max(warmup, 1)):
        outputs = run(batch)
    latencies = []
    budget_end = time.time() + max_seconds
    while len(latencies) < iterations and (len(latencies) < MIN_TIMED or time.time() < budget_end):
        start = time.perf_counter()
        outputs = run(batch)
        latencies.append(time.perf_counter() - start)
    return latencies, outputs


def summarize(path, batch_size, seq_length, latencies, largest_difference):
    latencies = np.asarray(latencies)
    return {
        "path": path, "batch_size": batch_size, "seq_length": seq_length,
        "sequences_per_s": batch_size / float(np.median(latencies)),
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p95_ms": 1000 * float(np.percentile(latencies, 95)),
        "calls": len(latencies),
        "max_abs_diff_vs_eager": largest_difference,
    }


def oneflow_path(model, mode, use_numpy_blas):
    """batch dict -> [start_logits, end_logits] as numpy, on the runner run_infer.py uses."""
    runner = build_runner(mode, QA, model, Placement("cpu", False))

    def run(batch):
        numpy_blas.set_enabled(use_numpy_blas)
        return [t.numpy() for t in runner.eval_step(batch)]

    return run


def onnx_path(onnx_file, threads):
    from utils import onnx_serving

    session = onnx_serving.open_session(onnx_file, threads=threads)
    return lambda batch: session.run(["start_logits", "end_logits"], onnx_serving.feeds(session, batch))


def export_onnx_file(model, config, directory, trace_length):
    """The QA model as ONNX with a dynamic batch and length, written and finished by utils.export_onnx."""
    from utils import export_onnx

    path = os.path.join(directory, "qa.onnx")
    export_onnx.convert(model, QA, QA.eval_fields, trace_length, 13, path)
    export_onnx.finish(path, QA.eval_fields, "qa", config)
    return path


def largest_difference(outputs, reference):
    return max(float(np.abs(np.asarray(o) - r).max()) for o, r in zip(outputs, reference))


def run_oneflow_paths(model, config, args, work_dir):
    """Every requested OneFlow / ONNX Runtime path at every shape: the rows of the table, and OneFlow eager's
    logits per (batch size, length), the reference every path is compared with."""
    wants_onnx = {"ort1", "ort2"} & set(args.paths)
    onnx_file = export_onnx_file(model, config, work_dir, min(args.seq_length)) if wants_onnx else None
    rows, references = [], {}
    for batch_size in args.batch_size:
        for seq_length in args.seq_length:
            batch = random_batch(batch_size, seq_length, config.vocab_size)
            np.savez(os.path.join(work_dir, f"batch_{batch_size}_{seq_length}.npz"), **batch)
            reference = references[batch_size, seq_length] = oneflow_path(model, "eager", True)(batch)
            for path in args.paths:
                run = {
                    "eager": lambda: oneflow_path(model, "eager", True),
                    "eager_no_blas": lambda: oneflow_path(model, "eager", False),
                    "graph": lambda: oneflow_path(model, "graph", False),
                    "ort1": lambda: onnx_path(onnx_file, 1),
                    "ort2": lambda: onnx_path(onnx_file, 2),
                }[path]()
                latencies, outputs = time_calls(run, batch, args.iterations, args.max_seconds, args.warmup)
                rows.append(summarize(path, batch_size, seq_length, latencies,
                                      largest_difference(outputs, reference)))
                print_row(rows[-1])
    return rows, references


def run_torch_path(model, config, args, work_dir, references):
    """PyTorch eager in --torch_python on the same weights and batches; its rows, compared with OneFlow eager's
    logits (`references`, by batch size and length)."""
    from utils.checkpoints.hf import export_hf

    hf_dir = os.path.join(work_dir, "hf")
    export_hf(model, config, hf_dir)
    result_file = os.path.join(work_dir, "torch.json")
    command = [args.torch_python, TORCH_SCRIPT, "--model_dir", hf_dir, "--batches_dir", work_dir,
               "--iterations", str(args.iterations), "--max_seconds", str(args.max_seconds),
               "--warmup", str(args.warmup), "--json", result_file]
    subprocess.run(command, check=True)
    rows = json.load(open(result_file))
    for row in rows:
        shape = row["batch_size"], row["seq_length"]
        torch_logits = np.load(os.path.join(work_dir, "torch_logits_{}_{}.npy".format(*shape)))
        difference = largest_difference(torch_logits, references[shape])
        row.update(summarize("pytorch", *shape, row.pop("latencies"), difference))
        print_row(row)
    return rows


def print_row(row):
    print(f"{row['path']:<14} batch {row['batch_size']:>3} seq {row['seq_length']:>4}  "
          f"{row['sequences_per_s']:9.2f} seq/s  p50 {row['p50_ms']:9.1f} ms  p95 {row['p95_ms']:9.1f} ms  "
          f"max |diff| vs eager {row['max_abs_diff_vs_eager']:.1e}", flush=True)


def markdown_table(rows):
    """Paths as rows, shapes as column groups: the README's inference table."""
    shapes = sorted({(r["batch_size"], r["seq_length"]) for r in rows})
    paths = list(dict.fromkeys(r["path"] for r in rows))
    by_key = {(r["path"], r["batch_size"], r["seq_length"]): r for r in rows}
    header = "| path | " + " | ".join(f"b{b} s{s}: seq/s, p50 / p95 ms" for b, s in shapes) + " |"
    lines = [header, "|---|" + "---|" * len(shapes)]
    for path in paths:
        cells = []
        for b, s in shapes:
            r = by_key.get((path, b, s))
            cells.append(f"{r['sequences_per_s']:.1f}, {r['p50_ms']:.0f} / {r['p95_ms']:.0f}" if r else "")
        lines.append(f"| {path} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser():
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--model_load_dir", default=None,
                        help="A QA (or any BERT) checkpoint the project reads "
                             "(default: BERT-base shape, random weights)")
    parser.add_argument("--batch_size", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--seq_length", type=int, nargs="+", default=[128, 384])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--iterations", type=int, default=20, help="timed calls per path and shape (at least 3)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (at least 1: a graph compiles)")
    parser.add_argument("--max_seconds", type=float, default=30.0,
                        help="stop timing a path after this long, once it has 3 timed calls")
    parser.add_argument("--torch_python", default=None,
                        help="a Python with torch and transformers: adds PyTorch eager (not a project dependency)")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--markdown", default=None, help="write the table here as markdown")
    return parser


def load_model(model_load_dir, longest_sequence):
    """(config, model in eval mode); the model-shape flags check that the longest sequence fits the model."""
    model_parser = argparse.ArgumentParser()
    cfg.add_model_args(model_parser)
    argv = ["--seq_length", str(longest_sequence)] + (["--model_load_dir", model_load_dir] if model_load_dir else [])
    model_args = cfg.parse_args(model_parser, argv)
    config, model, _ = build_bert(model_args, BertForQuestionAnswering)
    model.eval()
    return config, model


def benchmark(args):
    for value in args.batch_size + args.seq_length:
        if value < 1:
            raise cfg.UsageError(f"--batch_size and --seq_length must be positive, got {value}")
    flow.manual_seed(0)
    config, model = load_model(args.model_load_dir, max(args.seq_length))
    print(f"model: {args.model_load_dir or 'BERT-base shape, random weights'} ({config.num_hidden_layers} layers, "
          f"hidden {config.hidden_size}); numpy BLAS kernel {numpy_blas.numpy_openblas_kernel()}", flush=True)
    with tempfile.TemporaryDirectory() as work_dir:
        rows, references = run_oneflow_paths(model, config, args, work_dir)
        if args.torch_python:
            rows += run_torch_path(model, config, args, work_dir, references)
    table = markdown_table(rows)
    print(table)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    return rows


def main(argv=None):
    args = build_parser().parse_args(argv)
    with interrupts.main_guard("benchmark_infer", errors_exit_with=2):
        return benchmark(args)


if __name__ == "__main__":
    main()
