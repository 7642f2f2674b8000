"""Flags of the fine-tuning and inference scripts (run_squad.py, run_infer.py), each defined once.

Spellings follow the seed example's run_squad.sh and run_infer.py (`--model=SQuAD`, `--do_train=True`,
`--batch_size_per_device`, `--use_lazy_model`, `--model_path`, ...). Model shape, `--model_load_dir`,
`--init_format`, `--seq_length` and the hardware flags come from utils/config.py. `resolve_tokenizer` is the
one rule both scripts use to find the vocab and lower-casing when --vocab_file / --do_lower_case are not given.
"""
from utils import tokenizer_settings
from utils.config import add_bool, show_defaults_in_help
from utils.optim import RECIPES


def add_mode_arg(group):
    group.add_argument("--mode", choices=["graph", "eager"], default="graph",
                       help="graph: nn.Graph, as the seed runs (default); eager: plain module calls")


def add_tokenizer_args(group):
    group.add_argument("--vocab_file", default=None,
                       help="WordPiece vocab.txt the model was trained with (default: the checkpoint's own)")
    add_bool(group, "--do_lower_case", default=True,
             help="Lower-case and strip accents before WordPiece (default: what the checkpoint recorded, else True)")


def add_answer_args(group):
    """How questions are windowed and answers decoded (Google BERT run_squad.py settings)."""
    group.add_argument("--doc_stride", type=int, default=128, help="Step between document windows, in tokens")
    group.add_argument("--max_query_length", type=int, default=64, help="Question tokens kept")
    group.add_argument("--n_best_size", type=int, default=20, help="Start/end candidates per window")
    group.add_argument("--max_answer_length", type=int, default=30, help="Longest answer, in tokens")


def add_squad_args(parser):
    show_defaults_in_help(parser)
    g = parser.add_argument_group("SQuAD fine-tuning")
    g.add_argument("--model", choices=["SQuAD"], default="SQuAD", help="Task (the seed's only one: SQuAD)")
    add_mode_arg(g)
    add_bool(g, "--do_train", default=False, help="Fine-tune on --train_file or --train_data_dir")
    add_bool(g, "--do_eval", default=False, help="Predict --predict_file / --eval_data_dir and print the scores")
    add_bool(g, "--version_2_with_negative", default=False, help="SQuAD v2.0: questions may have no answer")
    add_tokenizer_args(g)
    add_answer_args(g)
    g.add_argument("--null_score_diff_threshold", type=float, default=0.0,
                   help="v2.0: predict no answer when null score - best span score exceeds this")
    g.add_argument("--train_file", default=None, help="SQuAD JSON to train on (features are built and cached)")
    g.add_argument("--train_data_dir", default=None, help="Prebuilt training OFRecords (the seed's tarball layout)")
    g.add_argument("--train_example_num", type=int, default=None,
                   help="Training features expected (checked against the count when given)")
    g.add_argument("--predict_file", default=None, help="SQuAD JSON to predict and score")
    g.add_argument("--eval_data_dir", default=None,
                   help="Prebuilt eval OFRecords; post-processing uses its eval_features.json, else --predict_file")
    g.add_argument("--eval_example_num", type=int, default=None,
                   help="Eval features expected (checked against the count when given)")
    g.add_argument("--batch_size_per_device", type=int, default=16, help="Training batch size")
    g.add_argument("--eval_batch_size_per_device", type=int, default=16, help="Evaluation batch size")
    g.add_argument("--num_epoch", "--num_epochs", type=float, default=3.0,
                   help="Training epochs; a fraction trains that share of an epoch's steps")
    g.add_argument("--train_steps", type=int, default=None, help="Optimizer steps (overrides --num_epoch)")
    g.add_argument("--eval_steps", type=int, default=None,
                   help="Evaluate only this many batches; scores then cover the questions they complete")
    g.add_argument("--learning_rate", type=float, default=3e-5, help="Peak learning rate of AdamW")
    g.add_argument("--warmup_proportion", type=float, default=0.1, help="Linear warmup share of the steps")
    g.add_argument("--weight_decay", "--weight_decay_rate", type=float, default=0.01, help="AdamW weight decay")
    g.add_argument("--optimizer_recipe", choices=sorted(RECIPES), default="hf",
                   help="hf: eps 1e-8, decay on every parameter, one gradient norm, decay after warmup; "
                        "bert: Google BERT's optimization.py (see utils/optim.py)")
    g.add_argument("--loss_print_every_n_iter", type=int, default=20, help="Interval of training loss printing")
    g.add_argument("--log_dir", default=None, help="Also append the printed log lines to LOG_DIR/run_squad.log")
    add_bool(g, "--save_last_snapshot", default=False, help="Save the fine-tuned model to --model_save_dir")
    g.add_argument("--model_save_dir", default="./squad_snapshots",
                   help="Where --save_last_snapshot writes (a checkpoint --model_load_dir reads)")
    g.add_argument("--output_dir", default="./squad_output",
                   help="predictions.json, nbest_predictions.json, null_odds.json, eval_results.json and "
                        "the feature cache (features/)")


def add_infer_args(parser):
    show_defaults_in_help(parser)
    g = parser.add_argument_group("inference")
    add_mode_arg(g)
    g.add_argument("--task", choices=["nsp", "fill_mask", "qa", "features"], default=None,
                   help="nsp: P(B follows A); fill_mask: top-k for each [MASK]; qa: answer span of question A "
                        "in context B (needs a SQuAD checkpoint); features: last-layer hidden states "
                        "(default: features with --output_hidden_states, else nsp)")
    add_bool(g, "--use_lazy_model", default=False, help="--model_path is a OneFlow lazy snapshot")
    g.add_argument("--model_path", default=None, help="Checkpoint to load (the seed's flag; any format)")
    g.add_argument("--hf_model_dir", default=None, help="A Hugging Face BERT directory to load")
    add_tokenizer_args(g)
    g.add_argument("--input_text", default=None, help="Text A (the question for qa)")
    g.add_argument("--input_text_b", default=None, help="Text B (the context for qa)")
    g.add_argument("--input_path", default=None, help="File with one input per line; a tab separates A and B")
    g.add_argument("--top_k", type=int, default=5, help="fill_mask: candidates per [MASK]")
    g.add_argument("--batch_size", type=int, default=8, help="Inputs per forward pass")
    g.add_argument("--output_hidden_states", default=None, metavar="FILE.npy",
                   help="Write float32 [tokens, hidden] last-layer states of [CLS] A [SEP] (B [SEP]); "
                        "several inputs write FILE_0.npy, FILE_1.npy, ... (implies --task features)")
    add_answer_args(g)


def default_vocab_file(vocab_file, checkpoint_dir):
    """--vocab_file, else the checkpoint's vocab.txt (see utils/tokenizer_settings.py), else None."""
    if vocab_file or not checkpoint_dir:
        return vocab_file
    return tokenizer_settings.of_checkpoint(checkpoint_dir).vocab_file


def resolve_tokenizer(args, checkpoint_path):
    """The vocab file for a run, and args.do_lower_case set to the lower-casing it uses: the typed flags, else what
    the checkpoint carries (vocab.txt, do_lower_case in meta.json), else lower-casing."""
    found = tokenizer_settings.TokenizerSettings()
    if checkpoint_path:
        found = tokenizer_settings.of_checkpoint(checkpoint_path)
    settings = tokenizer_settings.for_run(args, found)
    args.do_lower_case = settings.do_lower_case
    return settings.vocab_file
