"""Load a OneFlow lazy snapshot into an eager model, and compare it with another checkpoint.

`load_params_from_lazy(model, lazy_dir)` keeps the seed's name (and also accepts a state
dict, as the seed's callers passed `model.state_dict()`).

    python -m utils.compare_lazy_outputs --lazy_dir SNAPSHOT --model_load_dir OTHER [--bert_config_file C]

runs both on the same random batch and prints the max absolute difference of each output.
"""
import sys

import numpy as np
import oneflow as flow

from modeling import BertForPreTraining
from utils import interrupts
from utils.cli import argument_parser
from utils.errors import BertError
from utils.checkpoints.lazy import read_lazy
from utils.checkpoints.loading import INIT_FORMATS, load_into, load_state, read_checkpoint_and_config


def load_params_from_lazy(model, lazy_dir):
    """Loads a lazy snapshot into a BERT module (or a state dict of one) in place; returns the
    LoadReport (unmatched snapshot names in `.unused`, new heads in `.missing`)."""
    if isinstance(model, flow.nn.Module):
        return load_into(model, (None, read_lazy(lazy_dir)), lazy_dir, "lazy")
    return load_state(model, read_lazy(lazy_dir), lazy_dir, "lazy")


def random_batch(config, batch_size, seq_length, seed):
    rng = np.random.RandomState(seed)
    input_ids = rng.randint(0, config.vocab_size, size=(batch_size, seq_length))
    token_type_ids = rng.randint(0, config.type_vocab_size, size=(batch_size, seq_length))
    attention_mask = np.ones((batch_size, seq_length), dtype=np.int64)
    attention_mask[1:, seq_length // 2 :] = 0  # padding in all but the first row
    positions = np.tile(np.arange(0, seq_length, max(1, seq_length // 8)), (batch_size, 1))
    return [flow.tensor(a, dtype=flow.int64) for a in (input_ids, attention_mask, token_type_ids, positions)]


def outputs(model, batch, with_heads):
    input_ids, attention_mask, token_type_ids, positions = batch
    with flow.no_grad():
        sequence_output, pooled = model.bert(input_ids, attention_mask, token_type_ids)
        result = {"sequence_output": sequence_output, "pooled_output": pooled}
        if with_heads:
            result["mlm_logits"], result["nsp_logits"] = model(input_ids, attention_mask, token_type_ids, positions)
    return {name: t.numpy() for name, t in result.items()}


def heads_loaded(report):
    return not any(name.startswith("cls.") for name in report.missing)


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--lazy_dir", required=True, help="lazy snapshot directory (snapshot_done)")
    parser.add_argument("--model_load_dir", required=True, help="OneFlow checkpoint or HF directory to compare with")
    parser.add_argument("--init_format", choices=INIT_FORMATS, default="auto", help="format of --model_load_dir")
    parser.add_argument("--bert_config_file", default=None, help="config when --model_load_dir has none")
    parser.add_argument("--seq_length", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    with interrupts.main_guard("compare_lazy_outputs"):
        args = parse_args(argv)
        try:
            fmt, checkpoint, config = read_checkpoint_and_config(args.model_load_dir, args.init_format,
                                                                 args.bert_config_file)
            eager, lazy = BertForPreTraining(config), BertForPreTraining(config)
            eager_report = load_into(eager, checkpoint, args.model_load_dir, fmt)
            lazy_report = load_params_from_lazy(lazy, args.lazy_dir)
        except BertError as e:
            sys.exit(f"error: {e}")
        print(lazy_report.summary())
        eager.eval()
        lazy.eval()
        batch = random_batch(config, args.batch_size, args.seq_length, args.seed)
        with_heads = heads_loaded(eager_report) and heads_loaded(lazy_report)
        expected, actual = outputs(eager, batch, with_heads), outputs(lazy, batch, with_heads)
        for name in expected:
            print(f"{name}: max abs diff {np.abs(expected[name] - actual[name]).max():.3e}")


if __name__ == "__main__":
    main()
