"""Every command-line flag of every script, defined once.

Spellings follow the seed example's README exactly (`--train-batch-size`, `--ofrecord_path`,
`--grad-acc-steps`, `--use_fp16`, `--model=SQuAD`, `--do_train=True`, ...). A script builds its parser
from the groups it needs, so a flag means the same thing everywhere.

Flags are validated before use: `check_flags` rejects values outside a flag's range (a script's first step), and
`resolve_bert_config` checks the shape flags against the config the run builds, i.e. merged with the checkpoint's
config.json when there is one, so that only flags the user typed are compared with a checkpoint.
"""
import math
import os
import sys
from collections import namedtuple

from modeling import ACTIVATIONS, BertConfig
from utils import numpy_blas
from utils.cli import HelpFormatter, add_bool, str2bool  # noqa: F401  (add_bool: scripts take it from here)
from utils.errors import UsageError
from utils.checkpoints.loading import ARCHITECTURE_FIELDS, resolve_config

def resume_mode(value):
    """--resume: a boolean, or "auto" (fall back to the newest intact checkpoint)."""
    return "auto" if str(value).lower() == "auto" else str2bool(value)


def show_defaults_in_help(parser):
    """Every parser that takes the shared flags lists each flag's default in --help (utils/cli.py)."""
    parser.formatter_class = HelpFormatter


def add_model_args(parser):
    show_defaults_in_help(parser)
    g = parser.add_argument_group("model shape")
    g.add_argument("--num_hidden_layers", type=int, default=12, help="Number of layers")
    g.add_argument("--num_attention_heads", type=int, default=12, help="Number of attention heads")
    g.add_argument("--hidden_size", type=int, default=None, help="Hidden size (default: hidden_size_per_head x num_attention_heads)")
    g.add_argument("--hidden_size_per_head", type=int, default=64,
                   help="Hidden size per head, used when --hidden_size is not given (seed SQuAD flag); when typed, "
                        "the model's hidden_size / num_attention_heads must equal it")
    g.add_argument("--intermediate_size", type=int, default=None, help="MLP size (default: 4 x hidden_size)")
    g.add_argument("--max_position_embeddings", type=int, default=512, help="Max position length of bert position embedding")
    g.add_argument("--seq_length", type=int, default=128, help="Maximum sequence len")
    g.add_argument("--vocab_size", type=int, default=30522, help="Total number of vocab")
    g.add_argument("--type_vocab_size", type=int, default=2, help="Number class of sentence classification")
    g.add_argument("--attention_probs_dropout_prob", type=float, default=0.1, help="Attention dropout ratio")
    g.add_argument("--hidden_dropout_prob", type=float, default=0.1, help="Hidden layer dropout ratio")
    g.add_argument("--layer_norm_eps", type=float, default=1e-12, help="LayerNorm epsilon (Google BERT: 1e-12)")
    g.add_argument("--hidden_act", default="gelu", choices=sorted(ACTIVATIONS),
                   help="gelu (erf), gelu_new / gelu_pytorch_tanh (tanh approximation) or relu")
    g.add_argument("--model_load_dir", default=None,
                   help="Initial weights: a OneFlow checkpoint, an HF dir (config.json + model.safetensors), a lazy "
                        "snapshot or a Google TF checkpoint (bert_config.json + bert_model.ckpt.*, or its prefix)")
    g.add_argument("--init_format", choices=["auto", "oneflow", "hf", "lazy", "tf"], default="auto",
                   help="Format of --model_load_dir (auto: detected from its files)")


def add_hardware_args(parser):
    show_defaults_in_help(parser)
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
    show_defaults_in_help(parser)
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
    g.add_argument("--vocab_file", default=None,
                   help="WordPiece vocab.txt of the training data, copied into every checkpoint (default: the vocab "
                        "that the data's summary.json names, when it is found here)")
    add_bool(g, "--do_lower_case", default=None,
             help="Whether the training data was lower-cased, recorded in every checkpoint (default: what the data's "
                  "summary.json says, else True)")
    g.add_argument("--checkpoint_path", default="./checkpoints", help="Path to model saving")
    g.add_argument("--save_every_n_iters", type=int, default=1000, help="Checkpoint interval in optimizer steps")
    g.add_argument("--keep_checkpoints", type=int, default=3,
                   help="How many newest checkpoints to keep; 0 keeps every checkpoint")
    g.add_argument("--resume", type=resume_mode, nargs="?", const=True, default=False, metavar="BOOL|auto",
                   help="Continue from the newest checkpoint under --checkpoint_path; a damaged newest checkpoint is an "
                        "error, unless --resume=auto, which resumes from the newest intact one")
    add_bool(g, "--use_ddp", default=False, help="Eager DistributedDataParallel over the launched processes")
    g.add_argument("--peer_timeout", type=float, default=300.0,
                   help="Multi-process runs: end the run when a process of this node has been stopped (SIGSTOP) "
                        "for this many seconds, instead of waiting for it for ever")
    add_bool(g, "--use_consistent", default=False, help="Global (consistent) data-parallel tensors")
    add_bool(g, "--metric-local", "--metric_local", default=False, help="Report rank-local metrics instead of reduced ones")


def parse_args(parser, argv=None):
    """parser.parse_args, plus args.explicit: the dests of the flags the user actually typed, and
    args.spellings: {dest: the option as typed}, so that messages name a flag the way the user wrote it."""
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.spellings = {}
    for token in argv:
        if token.startswith("--"):
            option = token.split("=", 1)[0]
            action = typed_action(parser, option)
            if action is not None:
                args.spellings[action.dest] = option  # the last one typed is the value argparse keeps
    args.explicit = set(args.spellings)
    return args


def typed_action(parser, option):
    """The action of an option as typed, abbreviations included: argparse accepts `--num_attention 4` for
    `--num_attention_heads 4`, and a typed flag that went unrecorded would never be checked against a checkpoint."""
    actions = parser._option_string_actions
    if option in actions:
        return actions[option]
    matches = {action for name, action in actions.items() if name.startswith(option)}
    return matches.pop() if len(matches) == 1 else None


def flag_name(args, dest):
    return getattr(args, "spellings", {}).get(dest, "--" + dest)


def described(args, dest, value):
    """`--flag value`, marked when the value is the flag's default rather than typed."""
    default = "" if dest in getattr(args, "explicit", ()) else " (the default)"
    return f"{flag_name(args, dest)} {value}{default}"


# ---------------------------------------------------------------- value checks


class Rule(namedtuple("Rule", ["text", "holds"])):
    """A flag's valid values: holds(value) is True for them, text says which they are."""


AT_LEAST_ONE = Rule("an integer >= 1", lambda v: v >= 1)
KEEP_COUNT = Rule("an integer >= 0 (0 keeps every checkpoint)", lambda v: v >= 0)
POSITIVE = Rule("a finite number > 0", lambda v: math.isfinite(v) and v > 0)
NON_NEGATIVE = Rule("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0)
PROPORTION = Rule("a number in [0, 1]", lambda v: 0 <= v <= 1)  # comparisons with nan are False
PROBABILITY = Rule("a number in [0, 1)", lambda v: 0 <= v < 1)
FINITE = Rule("a finite number", math.isfinite)

# Every sized or counted flag of every script; a script's namespace has only some of them.
# --val_print_every_n_iters is absent on purpose: <= 0 means "validate only at the end".
COUNT_FLAGS = (
    # model shape
    "num_hidden_layers", "num_attention_heads", "hidden_size", "hidden_size_per_head", "intermediate_size",
    "max_position_embeddings", "seq_length", "vocab_size", "type_vocab_size", "max_predictions_per_seq",
    # batch sizes: pre-training, SQuAD, inference
    "train_batch_size", "val_batch_size", "train_global_batch_size", "val_global_batch_size",
    "batch_size_per_device", "eval_batch_size_per_device", "batch_size", "gpu_num_per_node",
    # schedule and intervals
    "epochs", "train_steps", "val_steps", "eval_steps", "grad_acc_steps", "loss_print_every_n_iters",
    "loss_print_every_n_iter", "save_every_n_iters",
    # answer decoding and fill-mask
    "doc_stride", "max_query_length", "n_best_size", "max_answer_length", "top_k",
)
FLAG_RULES = {
    **dict.fromkeys(COUNT_FLAGS, AT_LEAST_ONE),
    "keep_checkpoints": KEEP_COUNT,
    "num_epoch": POSITIVE,
    "lr": POSITIVE,
    "learning_rate": POSITIVE,
    "clip_grad_max_norm": POSITIVE,
    "peer_timeout": POSITIVE,
    "layer_norm_eps": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "warmup_proportion": PROPORTION,
    "hidden_dropout_prob": PROBABILITY,
    "attention_probs_dropout_prob": PROBABILITY,
    "null_score_diff_threshold": FINITE,
}


def check_flags(args):
    """UsageError naming every flag of args outside its valid values, before anything uses them.

    Flags the script does not define, and optional flags left unset (None), are skipped. How the shape flags
    fit together is checked later, against the checkpoint's config too: see resolve_bert_config.
    """
    problems = []
    for dest, rule in FLAG_RULES.items():
        value = getattr(args, dest, None)
        if value is not None and not rule.holds(value):
            problems.append(f"{flag_name(args, dest)} {value}: must be {rule.text}")
    if problems:
        raise UsageError("; ".join(problems))


# ---------------------------------------------------------------- the model's config


def flag_bert_fields(args):
    """BertConfig fields as the flags describe them (unchecked): hidden_size defaults to hidden_size_per_head x
    num_attention_heads, intermediate_size to 4 x hidden_size."""
    hidden = args.hidden_size or args.hidden_size_per_head * args.num_attention_heads
    return dict(
        vocab_size=args.vocab_size,
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


def bert_config_from_args(args, vocab_size=None):
    """BertConfig from the flags alone (no checkpoint config); a shape BertConfig rejects is a UsageError."""
    fields = flag_bert_fields(args)
    fields["vocab_size"] = vocab_size or fields["vocab_size"]
    if fields["hidden_size"] % fields["num_attention_heads"]:
        raise UsageError(f"{described(args, 'hidden_size', fields['hidden_size'])} is not a multiple of "
                         f"{described(args, 'num_attention_heads', fields['num_attention_heads'])}: "
                         "every attention head gets hidden_size / num_attention_heads dimensions")
    return BertConfig(**fields)


def explicit_bert_fields(args):
    """The BertConfig fields the user typed a flag for, to check against a checkpoint's own config.

    --hidden_size_per_head is not among them: it fixes hidden_size only together with the heads, which may come
    from the checkpoint, so check_head_size compares it with the resolved config instead.
    """
    typed = getattr(args, "explicit", set())
    return {name: value for name, value in flag_bert_fields(args).items() if name in typed}


def resolve_bert_config(args, checkpoint_config=None):
    """The BertConfig a run builds, and the one place the shape flags are checked as a whole.

    With a checkpoint config, the architecture is the checkpoint's and only the shape flags the user typed must
    agree with it (a flag default such as 12 heads describes no checkpoint); dropouts come from the flags.
    Without one, the flags alone describe the model. Either way --seq_length must fit the position embeddings.
    """
    if checkpoint_config is None:
        config = bert_config_from_args(args)
    else:
        training = {name: value for name, value in flag_bert_fields(args).items() if name not in ARCHITECTURE_FIELDS}
        config = resolve_config(checkpoint_config, explicit_bert_fields(args), BertConfig(**training))
    from_checkpoint = checkpoint_config is not None
    check_head_size(args, config, from_checkpoint)
    check_positions(args, config, from_checkpoint)
    return config


def model_fields(args, config, names, from_checkpoint):
    """How a message names some of the model's fields: as the checkpoint's values, or as the flags that set them."""
    if from_checkpoint:
        return "the checkpoint's " + " / ".join(f"{name} {getattr(config, name)}" for name in names)
    return " / ".join(described(args, name, getattr(config, name)) for name in names)


def check_head_size(args, config, from_checkpoint):
    """A typed --hidden_size_per_head must agree with the model's hidden_size / num_attention_heads."""
    per_head = args.hidden_size_per_head
    if "hidden_size_per_head" in getattr(args, "explicit", ()) and per_head * config.num_attention_heads != config.hidden_size:
        model = model_fields(args, config, ("hidden_size", "num_attention_heads"), from_checkpoint)
        raise UsageError(f"{flag_name(args, 'hidden_size_per_head')} {per_head} disagrees with {model} = "
                         f"{config.hidden_size // config.num_attention_heads} per head")


def check_positions(args, config, from_checkpoint):
    """A token past max_position_embeddings has no position embedding: fail here, not inside a forward pass."""
    seq_length = getattr(args, "seq_length", None)
    if seq_length is not None and seq_length > config.max_position_embeddings:
        positions = model_fields(args, config, ("max_position_embeddings",), from_checkpoint)
        raise UsageError(f"{described(args, 'seq_length', seq_length)} exceeds {positions}: "
                         "--seq_length must be <= max_position_embeddings")


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
