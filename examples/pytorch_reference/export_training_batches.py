"""Exports run_squad.py's training batches, in its loader's order, for squad_reference.py --input ours.

Runs in the project's venv. TRAIN_DIR is the feature cache run_squad.py builds (OUT_DIR/features/train) or any
--train_data_dir; the steps and their order are exactly those of `run_squad.py --batch_size_per_device B
--seed S --num_epoch E` (or --train_steps N):

    .venv/bin/python examples/pytorch_reference/export_training_batches.py TRAIN_DIR batches.npz \
        --seq_length 256 --batch_size 16 --seed 12345 --num_epoch 1
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir))

import utils  # noqa: E402,F401  (before numpy, as in every entry point)
import numpy as np  # noqa: E402

import dataset  # noqa: E402
from run_squad import TRAIN_FIELDS, total_train_steps, training_loader  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("train_dir")
    ap.add_argument("output")
    ap.add_argument("--seq_length", type=int, required=True)
    ap.add_argument("--batch_size", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--num_epoch", type=float, default=1.0)
    ap.add_argument("--train_steps", type=int, default=None)
    args = ap.parse_args()
    index = dataset.RecordIndex(args.train_dir, dataset.squad_train_schema(args.seq_length))
    loader = training_loader(index, args.batch_size, args.seed)
    steps = total_train_steps(args.train_steps, args.num_epoch, loader.steps_per_epoch)
    batches = [loader.load_batch(step) for step in range(steps)]
    np.savez_compressed(args.output, **{f: np.stack([b[f] for b in batches]) for f in TRAIN_FIELDS})
    print(f"{args.output}: {steps} steps of {args.batch_size} from {len(index)} features in {args.train_dir}")


if __name__ == "__main__":
    main()
