"""Export any checkpoint (OneFlow, lazy or HF) as a Hugging Face directory.

    python -m utils.checkpoints.export_hf --model_load_dir X --output_dir Y [--vocab_file V]

The model class follows the weights: a SQuAD head -> BertForQuestionAnswering, MLM/NSP heads ->
BertForPreTraining, else BertModel (override with --architecture). Lazy snapshots and bare
state dicts carry no config: pass --bert_config_file.
"""
import argparse
import sys

import modeling
from utils import interrupts
from utils.checkpoints import CheckpointError
from utils.checkpoints.hf import EXPORTABLE, export_hf
from utils.checkpoints.loading import INIT_FORMATS, load_into, read_checkpoint_and_config


def architecture_for(state):
    if any(name.startswith("qa_outputs.") for name in state):
        return "BertForQuestionAnswering"
    if any(name.startswith("cls.") for name in state):
        return "BertForPreTraining"
    return "BertModel"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_load_dir", required=True, help="OneFlow checkpoint, HF directory or lazy snapshot")
    parser.add_argument("--output_dir", required=True, help="where config.json and model.safetensors are written")
    parser.add_argument("--vocab_file", default=None, help="vocab.txt to copy next to the weights")
    parser.add_argument("--init_format", choices=INIT_FORMATS, default="auto")
    parser.add_argument("--bert_config_file", default=None, help="config for checkpoints without one")
    parser.add_argument("--architecture", choices=("auto",) + EXPORTABLE, default="auto")
    return parser.parse_args(argv)


def main(argv=None):
    with interrupts.main_guard("export_hf"):
        args = parse_args(argv)
        try:
            fmt, checkpoint, config = read_checkpoint_and_config(args.model_load_dir, args.init_format,
                                                                 args.bert_config_file)
            architecture = args.architecture
            if architecture == "auto":
                architecture = architecture_for(checkpoint[1])
            model = getattr(modeling, architecture)(config)
            report = load_into(model, checkpoint, args.model_load_dir, fmt)
        except CheckpointError as e:
            sys.exit(f"error: {e}")
        print(report.summary())
        export_hf(model, config, args.output_dir, args.vocab_file)
        print(f"wrote {architecture} to {args.output_dir}")


if __name__ == "__main__":
    main()
