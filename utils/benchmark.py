"""Training throughput of the real pre-training step, per named config and execution mode.

    python3 -m utils.benchmark --config {small,base,quickstart} --mode {eager,graph,ddp2,global2}
        [--steps N] [--warmup N] [--numpy_blas=False] [--json FILE]

It builds the model, optimizer and runner exactly as run_eager_pretraining.py / run_pretraining.py do
(utils.runtime.build_runner) and times `runner.train_step` on a fixed random batch: median seconds per step
after warm-up, tokens/s over all processes, peak RSS of the largest process, graph compile time, and model
FLOP/s as a fraction of a single-process matmul peak measured in the same run. ddp2 and global2 relaunch
this module under oneflow.distributed.launch with 2 processes. B is per process.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from utils import numpy_blas
from utils.cli import argument_parser
from utils.config import add_bool

CONFIGS = {
    # The README's main job (examples/quickstart.sh).
    "quickstart": dict(num_hidden_layers=2, hidden_size=128, num_attention_heads=2, intermediate_size=512, batch=32),
    "small": dict(num_hidden_layers=4, hidden_size=256, num_attention_heads=4, intermediate_size=1024, batch=32),
    "base": dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072, batch=8),
}
SEQ, PREDICTIONS, VOCAB = 128, 20, 30522
MODES = {"eager": ("eager", 1), "graph": ("graph", 1), "ddp2": ("eager", 2), "global2": ("graph", 2)}


def model_flops_per_step(c, batch):
    """Forward + backward FLOPs (3x forward) of one step: dense layers, attention products, MLM head."""
    h, i, layers, tokens = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], batch * SEQ
    dense = layers * (4 * h * h + 2 * h * i) * tokens * 2
    attention = layers * 2 * batch * SEQ * SEQ * h * 2
    mlm = batch * PREDICTIONS * (h * h + h * VOCAB) * 2
    return 3 * (dense + attention + mlm + 2 * h * h * batch)


def matmul_peak_flops(use_numpy, size=1024, repeats=5):
    """FLOP/s of a [size, size] matmul in this process, on the GEMM the eager step uses."""
    import oneflow as flow

    a, b = flow.randn(size, size), flow.randn(size, size)
    a_np, b_np = a.numpy(), b.numpy()
    product = (lambda: a_np @ b_np) if use_numpy else (lambda: flow.matmul(a, b).numpy())
    product()
    start = time.time()
    for _ in range(repeats):
        product()
    return 2 * size ** 3 * repeats / (time.time() - start)


def random_batch(batch, vocab, seed=0):
    import numpy as np

    rng = np.random.RandomState(seed)
    return {
        "input_ids": rng.randint(0, vocab, (batch, SEQ)).astype(np.int32),
        "input_mask": np.ones((batch, SEQ), dtype=np.int32),
        "segment_ids": (np.arange(SEQ)[None] >= SEQ // 2).repeat(batch, 0).astype(np.int32),
        "masked_lm_positions": np.sort(rng.randint(1, SEQ, (batch, PREDICTIONS)), axis=1).astype(np.int32),
        "masked_lm_ids": rng.randint(0, vocab, (batch, PREDICTIONS)).astype(np.int32),
        "masked_lm_weights": np.ones((batch, PREDICTIONS), dtype=np.float32),
        "next_sentence_labels": rng.randint(0, 2, (batch, 1)).astype(np.int32),
    }


def measure(config_name, mode, steps, warmup, use_numpy_blas):
    """Runs in each process; returns this process's measurements."""
    import oneflow as flow

    from modeling import BertConfig, BertForPreTraining
    from utils import runtime
    from utils.trainer import PRETRAINING
    from utils.optim import build_lr_scheduler, build_optimizer

    numpy_blas.set_enabled(use_numpy_blas)
    c = CONFIGS[config_name]
    kind, _ = MODES[mode]
    is_global = mode == "global2"
    flow.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, **{k: v for k, v in c.items() if k != "batch"})
    placement = runtime.Placement("cpu", is_global)
    model = runtime.distribute(BertForPreTraining(config), placement, use_ddp=mode == "ddp2")
    optimizer = build_optimizer(model, "adamw", 1e-4, 0.01, 1.0)
    runner = runtime.build_runner(kind, PRETRAINING, model, placement, optimizer,
                                  build_lr_scheduler(optimizer, 10_000, 100))
    batch = random_batch(c["batch"], VOCAB, seed=flow.env.get_rank())
    # OneFlow runs ops asynchronously: a step is done when the optimizer has written the last parameter.
    last_parameter = optimizer.param_groups[-1].parameters[-1]

    def timed_step():
        start = time.time()
        runner.train_step(batch)
        (last_parameter if last_parameter.is_local else last_parameter.to_local()).numpy()
        return time.time() - start

    first = timed_step()  # includes graph compilation in graph modes
    for _ in range(warmup):
        timed_step()
    times = [timed_step() for _ in range(steps)]
    return {"first_step_s": first, "times": times,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}


def summarize(config_name, mode, per_process, peak_flops, use_numpy_blas):
    """use_numpy_blas: whether the timed step ran on numpy's BLAS (eager modes with the flag on)."""
    c = CONFIGS[config_name]
    kind, nproc = MODES[mode]
    median = statistics.median(per_process[0]["times"])
    flops = model_flops_per_step(c, c["batch"]) * nproc / median
    return {
        "config": config_name, "mode": mode, "processes": nproc, "batch_per_process": c["batch"], "seq_length": SEQ,
        "tokens_per_s": nproc * c["batch"] * SEQ / median,
        "sec_per_step_median": median,
        "peak_rss_gb": max(p["peak_rss_gb"] for p in per_process),
        "compile_s": (per_process[0]["first_step_s"] - median) if kind == "graph" else 0.0,
        "numpy_blas": use_numpy_blas,
        "numpy_openblas_kernel": numpy_blas.numpy_openblas_kernel(),
        "model_tflops": flops / 1e12,
        "matmul_peak_gflops": peak_flops / 1e9,
        "fraction_of_matmul_peak": flops / peak_flops,
        "steps_timed": len(per_process[0]["times"]),
    }


def run_distributed(args):
    """Relaunches this module with 2 processes; each writes its measurements to a temp dir."""
    with tempfile.TemporaryDirectory() as out:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", "--master_port", str(port),
               "-m", "utils.benchmark", "--config", args.config, "--mode", args.mode, "--steps", str(args.steps),
               "--warmup", str(args.warmup), f"--numpy_blas={args.numpy_blas}", "--worker_dir", out]
        subprocess.run(cmd, check=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return [json.load(open(os.path.join(out, f"rank{r}.json"))) for r in range(2)]


def print_table(result):
    rows = [("config", result["config"]), ("mode", result["mode"]), ("numpy BLAS", str(result["numpy_blas"])),
            ("tokens/s", f"{result['tokens_per_s']:.0f}"),
            ("s/step (median)", f"{result['sec_per_step_median']:.3f}"), ("peak RSS GB", f"{result['peak_rss_gb']:.2f}"),
            ("compile s", f"{result['compile_s']:.1f}"), ("model TFLOP/s", f"{result['model_tflops']:.4f}"),
            ("matmul peak GFLOP/s", f"{result['matmul_peak_gflops']:.1f}"),
            ("fraction of matmul peak", f"{result['fraction_of_matmul_peak']:.2f}")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def main(argv=None):
    parser = argument_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="small")
    parser.add_argument("--mode", choices=sorted(MODES), default="eager")
    parser.add_argument("--steps", type=int, default=5, help="timed steps after warm-up")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", default=None, help="write the result here")
    add_bool(parser, "--numpy_blas", default=numpy_blas.enabled_in_environment(),
             help="eager modes: matrix products on numpy's BLAS (default: on unless BERT_NUMPY_BLAS=0)")
    parser.add_argument("--worker_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker_dir:  # one process of a ddp2/global2 run
        import oneflow as flow

        result = measure(args.config, args.mode, args.steps, args.warmup, args.numpy_blas)
        with open(os.path.join(args.worker_dir, f"rank{flow.env.get_rank()}.json"), "w") as f:
            json.dump(result, f)
        return
    kind, nproc = MODES[args.mode]
    use_numpy = args.numpy_blas and kind == "eager"
    per_process = run_distributed(args) if nproc > 1 else [
        measure(args.config, args.mode, args.steps, args.warmup, args.numpy_blas)]
    result = summarize(args.config, args.mode, per_process, matmul_peak_flops(use_numpy), use_numpy)
    print_table(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
