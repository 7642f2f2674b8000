"""Benchmark of create_pretraining_data on the shared corpus: wall time, instances/s and peak RSS.

    python -m utils.data.benchmark_create_pretraining_data [--input_file CORPUS] [--dupe_factor 5]
        [--num_workers 2] [--max_seq_length 128] [--output_dir DIR] [--json OUT.json]

cpu_seconds (this process and its workers) does not depend on what else runs on the machine; the load
average at the end tells whether other work competed for the cores. The peak RSS is the largest sum of resident memory over this process and its worker processes,
sampled from /proc every 0.2 s. Records go to a temporary folder that is deleted afterwards unless
--output_dir is given.
"""
import json
import os
import resource
import sys
import tempfile
import threading
import time

from utils import interrupts
from utils.cli import argument_parser
from utils.data import create_pretraining_data as cpd
from utils.data.instances import InstanceOptions
from utils.data.sentences import ReadStats, iter_text_documents, list_input_files
from utils.files import write_json_atomic
from utils.paths import shared_data_path


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def child_pids(pid):
    children = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                children += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return children


class PeakRss:
    """Samples the RSS of this process tree in a background thread."""

    def __init__(self, interval=0.2):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            pids, frontier = [os.getpid()], [os.getpid()]
            while frontier:
                frontier = [c for p in frontier for c in child_pids(p)]
                pids += frontier
            self.peak = max(self.peak, sum(rss_bytes(p) for p in pids))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def cpu_seconds():
    """User + system CPU time of this process and its finished children (the pool's workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def benchmark(args):
    """Runs the pipeline once on a temp folder (or --output_dir); returns the measurements."""
    instances = InstanceOptions(seq_length=args.max_seq_length,
                                max_predictions_per_seq=args.max_predictions_per_seq, dupe_factor=args.dupe_factor)
    with tempfile.TemporaryDirectory(prefix="bench-cpd-") as tmp:
        output_dir = args.output_dir or tmp
        options = cpd.PipelineOptions(output_dir, args.vocab_file, instances, num_workers=args.num_workers,
                                      num_parts=args.num_parts, overwrite=True)
        stats = ReadStats()
        paths = list_input_files(args.input_file)
        corpus = cpd.Corpus(iter_text_documents(paths, stats), name=args.input_file, read_stats=stats,
                            total_bytes=sum(os.path.getsize(p) for p in paths))
        started, cpu_started = time.time(), cpu_seconds()
        with PeakRss() as rss:
            summary = cpd.write_pretraining_data(corpus, options)
        seconds, cpu = time.time() - started, cpu_seconds() - cpu_started
        output_bytes = sum(os.path.getsize(os.path.join(output_dir, n)) for n in os.listdir(output_dir)
                           if n.startswith("part-"))
    instances = summary["train"]["instances"]
    return {
        "input": args.input_file, "input_bytes": sum(os.path.getsize(p) for p in paths),
        "dupe_factor": args.dupe_factor, "max_seq_length": args.max_seq_length, "num_workers": args.num_workers,
        "cpu_count": os.cpu_count(), "documents": summary["train"]["documents"],
        "corpus_tokens": summary["train"]["corpus_tokens"], "instances": instances,
        "wall_seconds": round(seconds, 1), "instances_per_second": round(instances / seconds, 1),
        "cpu_seconds": round(cpu, 1), "load_average_1min": round(os.getloadavg()[0], 2),
        "peak_rss_gb": round(rss.peak / 2**30, 3), "output_mb": round(output_bytes / 2**20, 1),
        "masked_fraction": summary["train"]["masked_fraction"],
        "nsp_random_fraction": summary["train"]["nsp_random_fraction"],
    }


def main(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--input_file", default=shared_data_path("corpus", "pretrain_corpus_sentences.txt.gz"))
    parser.add_argument("--vocab_file", default=shared_data_path("vocab", "bert-base-uncased-vocab.txt"))
    parser.add_argument("--dupe_factor", type=int, default=5)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--max_predictions_per_seq", type=int, default=20)
    parser.add_argument("--num_parts", type=int, default=8)
    parser.add_argument("--output_dir", default=None, help="keep the records here (default: a temp folder)")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    for path, flag in ((args.input_file, "--input_file"), (args.vocab_file, "--vocab_file")):
        if not os.path.exists(path):
            sys.exit(f"error: {flag} {path} does not exist")
    with interrupts.main_guard("benchmark_create_pretraining_data"):
        try:
            result = benchmark(args)
        except cpd.PIPELINE_ERRORS as e:
            sys.exit(f"error: {e}")
        print(json.dumps(result, indent=2))
        if args.json:
            write_json_atomic(args.json, result, indent=2)


if __name__ == "__main__":
    main()
