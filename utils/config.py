"""Every command-line flag of every script, defined once.

Spellings follow the seed example's README exactly (`--train-batch-size`, `--ofrecord_path`,
`--grad-acc-steps`, `--use_fp16`, `--model=SQuAD`, `--do_train=True`, ...). A script builds its parser
from the groups it needs, so a flag means the same thing everywhere.
"""
import argparse
import os
import sys

from modeling import BertConfig
from utils import numpy_blas

_TRUE = {"true", "t", "yes", "y", "1", "on"}
_FALSE = {"false", "f", "no", "n", "0", "off"}


def str2bool(value):
    if isinstance(value, bool):
        return value
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (True/False), got {value!r}")


def add_bool(group, *names, default=False, help=""):
    """A bool flag usable bare (`--use_fp16`) or with a value (`--use_fp16=True`, `--use_fp16 False`)."""
    group.add_argument(*names, type=str2bool, nargs="?", const=True, default=default, metavar="BOOL", help=help)


def add_model_args(parser):
    g = parser.add_argument_group("model shape")
    g.add_argument("--num_hidden_layers", type=int, default=12, help="Number of layers")
    g.add_argument("--num_attention_heads", type=int, default=12, help="Number of attention heads")
    g.add_argument("--hidden_size", type=int, default=None, help="Hidden size (default: 64 x num_attention_heads)")
    g.add_argument("--hidden_size_per_head", type=int, default=64,
                   help="Hidden size per head, used when --hidden_size is not given (seed SQuAD flag)")
    g.add_argument("--intermediate_size", type=int, default=None, help="MLP size (default: 4 x hidden_size)")
    g.add_argument("--max_position_embeddings", type=int, default=512, help="Max position length of bert position embedding")
    g.add_argument("--seq_length", type=int, default=128, help="Maximum sequence len")
    g.add_argument("--vocab_size", type=int, default=30522, help="Total number of vocab")
    g.add_argument("--type_vocab_size", type=int, default=2, help="Number class of sentence classification")
    g.add_argument("--attention_probs_dropout_prob", type=float, default=0.1, help="Attention dropout ratio")
    g.add_argument("--hidden_dropout_prob", type=float, default=0.1, help="Hidden layer dropout ratio")
    g.add_argument("--layer_norm_eps", type=float, default=1e-12, help="LayerNorm epsilon (Google BERT: 1e-12)")
    g.add_argument("--hidden_act", default="gelu", help="gelu (erf), gelu_new (tanh approximation) or relu")
    g.add_argument("--model_load_dir", default=None,
                   help="Initial weights: a OneFlow checkpoint, an HF dir (config.json + model.safetensors) or a lazy snapshot")
    g.add_argument("--init_format", choices=["auto", "oneflow", "hf", "lazy"], default="auto",
                   help="Format of --model_load_dir (auto: detected from its files)")


def add_hardware_args(parser):
    g = parser.add_argument_group("hardware")
    add_bool(g, "--with-cuda", "--with_cuda", default=None,
             help="Training with CUDA: true, or false (default: whether CUDA is available)")
    g.add_argument("--cuda_devices", default=None, help="CUDA device ids (sets CUDA_VISIBLE_DEVICES)")
    g.add_argument("--gpu_num_per_node", type=int, default=1, help="GPUs per node (seed SQuAD flag)")
    add_bool(g, "--use_fp16", default=False, help="Mixed precision (CUDA only; CPU runs stay fp32)")
    add_bool(g, "--numpy_blas", default=numpy_blas.enabled_in_environment(),
             help="Eager CPU runs: matrix products on numpy's BLAS (default on; also BERT_NUMPY_BLAS=0 turns it off)")
    g.add_argument("--nccl-fusion-threshold-mb", "--nccl_fusion_threshold_mb", type=int, default=16,
                   help="NCCL fusion threshold megabytes (CUDA only)")
    g.add_argument("--nccl-fusion-max-ops", "--nccl_fusion_max_ops", type=int, default=24,
                   help="Maximum number of ops of NCCL fusion (CUDA only)")
    g.add_argument("--seed", type=int, default=12345, help="Random seed for init, dropout and data order")


def add_pretraining_args(parser):
    g = parser.add_argument_group("pre-training data and schedule")
    g.add_argument("--ofrecord_path", default=None,
                   help="Directory of training OFRecords part-0..part-N (default: the embedded demo data)")
    g.add_argument("--val_ofrecord_path", default=None,
                   help="Directory of validation OFRecords (default: <ofrecord_path>/val)")
    g.add_argument("--train-dataset-size", "--train_dataset_size", type=int, default=None,
                   help="Number of training records (default: counted from the files; a different value is an error)")
    g.add_argument("--train-data-part", "--train_data_part", type=int, default=None,
                   help="Number of part files (default: counted; a different value is an error)")
    g.add_argument("--train-batch-size", "--train_batch_size", type=int, default=32, help="Training batch size per process")
    g.add_argument("--val-batch-size", "--val_batch_size", type=int, default=32, help="Validation batch size per process")
    g.add_argument("--train-global-batch-size", "--train_global_batch_size", type=int, default=None,
                   help="Samples per optimizer step over all processes (= train-batch-size x grad-acc-steps x world size)")
    g.add_argument("--val-global-batch-size", "--val_global_batch_size", type=int, default=None,
                   help="Validation samples per step over all processes (= val-batch-size x world size)")
    g.add_argument("--max_predictions_per_seq", type=int, default=20, help="Max prediction length")
    g.add_argument("--epochs", type=int, default=1, help="Number of epochs")
    g.add_argument("--train_steps", "--train-steps", type=int, default=None,
                   help="Optimizer steps to run (default: epochs x steps per epoch)")
    g.add_argument("--optim_name", choices=["adamw", "lamb"], default="adamw", help="optimizer name")
    g.add_argument("--lr", type=float, default=1e-4, help="Peak learning rate")
    g.add_argument("--weight_decay", type=float, default=0.01, help="Weight decay (not applied to bias and LayerNorm)")
    g.add_argument("--warmup_proportion", type=float, default=0.01, help="Warmup proportion of total steps")
    g.add_argument("--grad-acc-steps", "--grad_acc_steps", type=int, default=1, help="Steps for gradient accumulation")
    g.add_argument("--clip_grad_max_norm", type=float, default=1.0,
                   help="Gradient clipping max norm, per parameter group (OneFlow graph semantics, also used in eager)")
    g.add_argument("--loss_print_every_n_iters", type=int, default=20, help="Interval of training loss printing")
    g.add_argument("--val_print_every_n_iters", type=int, default=100,
                   help="Interval (in training steps) of validation; <= 0 validates only at the end")
    g.add_argument("--val_steps", type=int, default=None, help="Validation batches per evaluation (default: whole set)")
    g.add_argument("--metrics_file", default=None,
                   help="Also append every printed train/val line's values at full precision to this JSON-lines file")
    g.add_argument("--checkpoint_path", default="./checkpoints", help="Path to model saving")
    g.add_argument("--save_every_n_iters", type=int, default=1000, help="Checkpoint interval in optimizer steps")
    g.add_argument("--keep_checkpoints", type=int, default=3, help="How many newest checkpoints to keep")
    add_bool(g, "--resume", default=False, help="Continue from the newest checkpoint under --checkpoint_path")
    add_bool(g, "--use_ddp", default=False, help="Eager DistributedDataParallel over the launched processes")
    add_bool(g, "--use_consistent", default=False, help="Global (consistent) data-parallel tensors")
    add_bool(g, "--metric-local", "--metric_local", default=False, help="Report rank-local metrics instead of reduced ones")


def bert_config_from_args(args, vocab_size=None):
    """BertConfig from the shape flags; hidden_size defaults to 64 x heads and intermediate to 4 x hidden."""
    hidden = args.hidden_size or args.hidden_size_per_head * args.num_attention_heads
    return BertConfig(
        vocab_size=vocab_size or args.vocab_size,
        hidden_size=hidden,
        num_hidden_layers=args.num_hidden_layers,
        num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size or 4 * hidden,
        hidden_act=args.hidden_act,
        hidden_dropout_prob=args.hidden_dropout_prob,
        attention_probs_dropout_prob=args.attention_probs_dropout_prob,
        max_position_embeddings=args.max_position_embeddings,
        type_vocab_size=args.type_vocab_size,
        layer_norm_eps=args.layer_norm_eps,
    )


def parse_args(parser, argv=None):
    """parser.parse_args, plus args.explicit: the dests of the flags the user actually typed."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.explicit = set()
    for token in argv:
        if token.startswith("--"):
            action = parser._option_string_actions.get(token.split("=", 1)[0])
            if action is not None:
                args.explicit.add(action.dest)
    return args


def explicit_bert_fields(args):
    """The BertConfig fields the user set by flag, to check against a checkpoint's own config."""
    derived = bert_config_from_args(args).to_dict()
    typed = set(args.explicit)
    if "hidden_size_per_head" in typed:
        typed.add("hidden_size")
    return {name: value for name, value in derived.items() if name in typed}


class UsageError(Exception):
    """A flag value or combination that makes no sense; the message names the flag."""


def warn(message):
    import oneflow as flow  # importing oneflow sets RANK=-1 in the environment outside a launch

    if flow.env.get_rank() == 0:
        print(f"WARNING: {message}", file=sys.stderr, flush=True)


def resolve_hardware(args):
    """One rule for what this machine can't do: CUDA-only flags warn once and the run continues on CPU in fp32.

    Sets args.device ("cuda" or "cpu") and turns off use_fp16 on CPU.
    """
    import oneflow as flow

    if args.cuda_devices:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", args.cuda_devices)
    cuda_available = flow.cuda.is_available()
    if args.with_cuda is None:
        args.with_cuda = cuda_available
    elif args.with_cuda and not cuda_available:
        warn("--with-cuda was given but CUDA is not available: running on CPU")
        args.with_cuda = False
    args.device = "cuda" if args.with_cuda else "cpu"
    numpy_blas.set_enabled(args.numpy_blas)
    if args.device == "cpu":
        if args.use_fp16:
            warn("--use_fp16 has no effect on CPU (OneFlow 0.9 has no CPU fp16/bf16 kernels): training stays fp32")
            args.use_fp16 = False
        defaults = {"nccl_fusion_threshold_mb": 16, "nccl_fusion_max_ops": 24}
        for name, default in defaults.items():
            if getattr(args, name, default) != default:
                warn(f"--{name.replace('_', '-')} only applies to NCCL on CUDA: ignored on CPU")
    return args
