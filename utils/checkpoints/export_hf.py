"""Export any checkpoint (OneFlow, lazy, HF or Google's TF1) as a Hugging Face directory.

    python -m utils.checkpoints.export_hf --model_load_dir X --output_dir Y [--vocab_file V]

So a Google BERT directory (bert_config.json + bert_model.ckpt.* + vocab.txt) converts TF -> HF
without TensorFlow. The checkpoint's own vocab.txt is copied when --vocab_file is not given.
`--output_format lazy` writes a OneFlow lazy snapshot instead (the seed's
`snapshot_tf_for_graph_snapshot`, from a Google directory).

The model class follows the weights: a SQuAD head -> BertForQuestionAnswering, MLM/NSP heads ->
BertForPreTraining, else BertModel (override with --architecture). Lazy snapshots and bare
state dicts carry no config: pass --bert_config_file.
"""
import sys

import modeling
from utils import interrupts
from utils.cli import argument_parser
from utils.errors import BertError
from utils.checkpoints.hf import EXPORTABLE, export_hf
from utils.checkpoints.lazy import write_lazy_snapshot
from utils.checkpoints.loading import INIT_FORMATS, load_into, read_checkpoint_and_config
from utils.tokenizer_settings import of_checkpoint


def architecture_for(state):
    if any(name.startswith("qa_outputs.") for name in state):
        return "BertForQuestionAnswering"
    if any(name.startswith("cls.") for name in state):
        return "BertForPreTraining"
    return "BertModel"


def parse_args(argv=None):
    parser = argument_parser(__doc__)
    parser.add_argument("--model_load_dir", required=True,
                        help="OneFlow checkpoint, HF directory, lazy snapshot or TF checkpoint (directory or prefix)")
    parser.add_argument("--output_dir", required=True, help="where config.json and model.safetensors are written")
    parser.add_argument("--vocab_file", default=None,
                        help="vocab.txt to copy next to the weights (default: the checkpoint's own, if any)")
    parser.add_argument("--init_format", choices=INIT_FORMATS, default="auto")
    parser.add_argument("--bert_config_file", default=None, help="config for checkpoints without one")
    parser.add_argument("--architecture", choices=("auto",) + EXPORTABLE, default="auto")
    parser.add_argument("--output_format", choices=("hf", "lazy"), default="hf",
                        help="hf: config.json + model.safetensors; lazy: a OneFlow lazy snapshot (weights only)")
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
        except BertError as e:
            sys.exit(f"error: {e}")
        print(report.summary())
        if args.output_format == "lazy":
            write_lazy_snapshot(model.state_dict(), args.output_dir)
        else:
            export_hf(model, config, args.output_dir, args.vocab_file or of_checkpoint(args.model_load_dir).vocab_file)
        print(f"wrote {architecture} to {args.output_dir} ({args.output_format})")


if __name__ == "__main__":
    main()
