"""Flags are validated before use: value ranges (cfg.check_flags) and the model's shape against the resolved config
(cfg.resolve_bert_config: the flags merged with the checkpoint's config.json). Every error is one line naming the flag."""
import argparse
import os

import oneflow as flow
import pytest

import run_infer
import run_squad
from modeling import BertConfig, BertForPreTraining, BertForQuestionAnswering
from utils import config as cfg
from utils.checkpoints import CheckpointError
from utils.checkpoints.loading import load_into, peek_config, read_checkpoint, read_checkpoint_and_config
from utils.trainer import build_parser as pretraining_parser

PARSERS = {
    "pretrain": lambda: pretraining_parser("test"),
    "squad": run_squad.build_parser,
    "infer": run_infer.build_parser,
}
# Two heads of 32: the 12-head flag default would not divide 64 (the old code checked that default first).
TWO_HEADS = BertConfig(vocab_size=40, hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       max_position_embeddings=48)
# Six heads of 5: 30 does not divide by the 12-head default either.
SIX_HEADS = BertConfig(vocab_size=40, hidden_size=30, num_hidden_layers=1, num_attention_heads=6, intermediate_size=16,
                       max_position_embeddings=48)


def parse(script, argv):
    return cfg.parse_args(PARSERS[script](), argv)


def usage_error(script, argv):
    with pytest.raises(cfg.UsageError) as caught:
        cfg.check_flags(parse(script, argv))
    return str(caught.value)


def one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- value ranges


@pytest.mark.parametrize("script,flag,value,rule", [
    # sizes and intervals: integers >= 1
    ("pretrain", "--train-batch-size", "0", "an integer >= 1"),
    ("pretrain", "--val_batch_size", "-2", "an integer >= 1"),
    ("pretrain", "--train-global-batch-size", "0", "an integer >= 1"),
    ("pretrain", "--val-global-batch-size", "0", "an integer >= 1"),
    ("pretrain", "--seq_length", "0", "an integer >= 1"),
    ("pretrain", "--max_predictions_per_seq", "0", "an integer >= 1"),
    ("pretrain", "--num_hidden_layers", "0", "an integer >= 1"),
    ("pretrain", "--num_attention_heads", "-1", "an integer >= 1"),
    ("pretrain", "--hidden_size", "-64", "an integer >= 1"),
    ("pretrain", "--intermediate_size", "0", "an integer >= 1"),
    ("pretrain", "--vocab_size", "0", "an integer >= 1"),
    ("pretrain", "--type_vocab_size", "0", "an integer >= 1"),
    ("pretrain", "--max_position_embeddings", "0", "an integer >= 1"),
    ("pretrain", "--grad-acc-steps", "0", "an integer >= 1"),
    ("pretrain", "--loss_print_every_n_iters", "0", "an integer >= 1"),
    ("pretrain", "--save_every_n_iters", "0", "an integer >= 1"),
    ("pretrain", "--epochs", "0", "an integer >= 1"),
    ("pretrain", "--train_steps", "0", "an integer >= 1"),
    ("pretrain", "--keep_checkpoints", "-1", "an integer >= 0 (0 keeps every checkpoint)"),
    ("squad", "--batch_size_per_device", "0", "an integer >= 1"),
    ("squad", "--eval_batch_size_per_device", "0", "an integer >= 1"),
    ("squad", "--loss_print_every_n_iter", "0", "an integer >= 1"),
    ("squad", "--train_steps", "-5", "an integer >= 1"),
    ("squad", "--eval_steps", "0", "an integer >= 1"),
    ("squad", "--doc_stride", "0", "an integer >= 1"),
    ("infer", "--batch_size", "0", "an integer >= 1"),
    ("infer", "--top_k", "0", "an integer >= 1"),
    ("infer", "--seq_length", "-1", "an integer >= 1"),
    # rates and probabilities: finite numbers in range
    ("pretrain", "--lr", "0", "a finite number > 0"),
    ("pretrain", "--lr", "nan", "a finite number > 0"),
    ("pretrain", "--lr", "inf", "a finite number > 0"),
    ("pretrain", "--weight_decay", "-0.01", "a finite number >= 0"),
    ("pretrain", "--weight_decay", "inf", "a finite number >= 0"),
    ("pretrain", "--warmup_proportion", "1.5", "a number in [0, 1]"),
    ("pretrain", "--warmup_proportion", "nan", "a number in [0, 1]"),
    ("pretrain", "--clip_grad_max_norm", "0", "a finite number > 0"),
    ("pretrain", "--clip_grad_max_norm", "nan", "a finite number > 0"),
    ("pretrain", "--hidden_dropout_prob", "1", "a number in [0, 1)"),
    ("pretrain", "--attention_probs_dropout_prob", "-0.1", "a number in [0, 1)"),
    ("pretrain", "--layer_norm_eps", "0", "a finite number > 0"),
    ("squad", "--learning_rate", "-3e-5", "a finite number > 0"),
    ("squad", "--learning_rate", "nan", "a finite number > 0"),
    ("squad", "--num_epoch", "0", "a finite number > 0"),
    ("squad", "--num_epoch", "inf", "a finite number > 0"),
    ("squad", "--weight_decay_rate", "nan", "a finite number >= 0"),
    ("squad", "--warmup_proportion", "-0.1", "a number in [0, 1]"),
    ("squad", "--hidden_dropout_prob", "nan", "a number in [0, 1)"),
    ("squad", "--null_score_diff_threshold", "inf", "a finite number"),
])
def test_a_value_out_of_range_names_the_flag_the_value_and_the_rule(script, flag, value, rule):
    argv = [f"{flag}={value}"]  # "=" so that argparse takes "-3e-5" as a value
    message = usage_error(script, argv)
    parsed = getattr(parse(script, argv), PARSERS[script]()._option_string_actions[flag].dest)
    assert message == f"{flag} {parsed}: must be {rule}"


def test_the_spelling_typed_is_the_one_named():
    assert usage_error("pretrain", ["--train_batch_size=0"]).startswith("--train_batch_size 0:")
    assert usage_error("pretrain", ["--train-batch-size=0"]).startswith("--train-batch-size 0:")


def test_every_bad_flag_is_named_on_one_line():
    message = usage_error("pretrain", ["--epochs", "0", "--lr", "nan", "--keep_checkpoints", "-3"])
    assert "\n" not in message
    assert all(part in message for part in ("--epochs 0", "--lr nan", "--keep_checkpoints -3"))


@pytest.mark.parametrize("script", sorted(PARSERS))
def test_defaults_pass(script):
    cfg.check_flags(parse(script, []))


@pytest.mark.parametrize("script,argv", [
    ("pretrain", ["--val_print_every_n_iters", "0"]),  # documented: validates only at the end
    ("pretrain", ["--val_print_every_n_iters", "-1"]),
    ("pretrain", ["--keep_checkpoints", "0"]),  # documented: keeps every checkpoint
    ("pretrain", ["--warmup_proportion", "0", "--weight_decay", "0", "--hidden_dropout_prob", "0"]),
    ("pretrain", ["--warmup_proportion", "1", "--attention_probs_dropout_prob", "0.99"]),
    ("squad", ["--num_epoch", "0.25", "--null_score_diff_threshold", "-1.5"]),
    ("infer", ["--seq_length", "16", "--batch_size", "1", "--top_k", "1"]),
])
def test_documented_edge_values_pass(script, argv):
    cfg.check_flags(parse(script, argv))


def test_only_the_flags_a_script_has_are_checked():
    cfg.check_flags(argparse.Namespace(lr=1e-3, name="no rule"))
    with pytest.raises(cfg.UsageError, match=r"^--batch_size 0: must be an integer >= 1$"):
        cfg.check_flags(argparse.Namespace(batch_size=0))


def test_an_unknown_activation_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        parse("pretrain", ["--hidden_act", "swish"])
    assert "--hidden_act: invalid choice: 'swish'" in capsys.readouterr().err


def test_an_abbreviated_flag_counts_as_typed():
    """argparse accepts a unique prefix; the flag must still be compared with the checkpoint."""
    args = parse("infer", ["--num_attention_he", "4", "--seq", "16"])
    assert {"num_attention_heads", "seq_length"} <= args.explicit
    assert args.spellings["num_attention_heads"] == "--num_attention_he"


# ---------------------------------------------------------------- the model's shape, against the resolved config


def save_checkpoint(root, config):
    """The native layout build_bert reads: <root>/step_00000001/{config.json, model/}."""
    step_dir = os.path.join(root, "step_00000001")
    os.makedirs(step_dir)
    config.to_json_file(os.path.join(step_dir, "config.json"))
    flow.manual_seed(0)
    flow.save(BertForPreTraining(config).state_dict(), os.path.join(step_dir, "model"))
    return root


@pytest.fixture(scope="module")
def two_heads(tmp_path_factory):
    return save_checkpoint(str(tmp_path_factory.mktemp("two_heads")), TWO_HEADS)


@pytest.fixture(scope="module")
def six_heads(tmp_path_factory):
    return save_checkpoint(str(tmp_path_factory.mktemp("six_heads")), SIX_HEADS)


def resolve(script, path, argv):
    return cfg.resolve_bert_config(parse(script, ["--model_load_dir", path] + argv), peek_config(path))


def architecture(config):
    return {name: value for name, value in config.to_dict().items() if "dropout" not in name}


@pytest.mark.parametrize("script", ["squad", "infer", "pretrain"])
@pytest.mark.parametrize("argv", [
    [],
    ["--num_attention_heads", "2"],
    ["--hidden_size", "64"],  # the 12-head default is not compared: it describes no checkpoint
    ["--hidden_size", "64", "--num_attention_heads", "2", "--intermediate_size", "32", "--vocab_size", "40"],
    ["--hidden_size_per_head", "32"],  # 32 x the checkpoint's 2 heads, not x the default 12
    ["--max_position_embeddings", "48", "--seq_length", "48"],
])
def test_shape_flags_that_agree_with_the_checkpoint_are_accepted(two_heads, script, argv):
    argv = argv if "--seq_length" in argv else argv + ["--seq_length", "32"]
    config = resolve(script, two_heads, argv + ["--hidden_dropout_prob", "0"])
    assert architecture(config) == architecture(TWO_HEADS)
    assert config.hidden_dropout_prob == 0 and config.attention_probs_dropout_prob == 0.1  # dropouts: the flags'


@pytest.mark.parametrize("argv", [[], ["--hidden_size", "30"], ["--num_attention_heads", "6", "--hidden_size", "30"]])
def test_a_six_head_checkpoint_does_not_meet_the_default_heads(six_heads, argv):
    assert architecture(resolve("infer", six_heads, argv)) == architecture(SIX_HEADS)


@pytest.mark.parametrize("argv,expected", [
    (["--num_attention_heads", "4"], "--num_attention_heads 4 disagrees with the checkpoint's num_attention_heads 2"),
    (["--num_attention_he", "4"], "--num_attention_heads 4 disagrees with the checkpoint's num_attention_heads 2"),
    (["--hidden_size", "128"], "--hidden_size 128 disagrees with the checkpoint's hidden_size 64"),
    (["--vocab_size", "30522"], "--vocab_size 30522 disagrees with the checkpoint's vocab_size 40"),
    (["--max_position_embeddings", "512"],
     "--max_position_embeddings 512 disagrees with the checkpoint's max_position_embeddings 48"),
])
def test_a_shape_flag_that_disagrees_names_both_values(two_heads, argv, expected):
    with pytest.raises(CheckpointError) as caught:
        resolve("infer", two_heads, argv)
    assert one_line(caught).startswith(expected)


def test_a_head_size_that_disagrees_names_the_flag(two_heads):
    with pytest.raises(cfg.UsageError) as caught:
        resolve("squad", two_heads, ["--hidden_size_per_head", "16", "--seq_length", "32"])
    assert one_line(caught) == ("--hidden_size_per_head 16 disagrees with the checkpoint's hidden_size 64 / "
                                "num_attention_heads 2 = 32 per head")


@pytest.mark.parametrize("script,argv,expected", [
    ("infer", ["--seq_length", "64"], "--seq_length 64 exceeds the checkpoint's max_position_embeddings 48"),
    ("infer", ["--seq_length", "64", "--max_position_embeddings", "48"],
     "--seq_length 64 exceeds the checkpoint's max_position_embeddings 48"),
    ("squad", [], "--seq_length 384 (the default) exceeds the checkpoint's max_position_embeddings 48"),
    ("pretrain", [], "--seq_length 128 (the default) exceeds the checkpoint's max_position_embeddings 48"),
])
def test_a_sequence_longer_than_the_checkpoints_positions_is_one_line(two_heads, script, argv, expected):
    with pytest.raises(cfg.UsageError) as caught:
        resolve(script, two_heads, argv)
    assert one_line(caught).startswith(expected)


def test_the_resolved_config_builds_the_model_the_checkpoint_loads_into(two_heads):
    args = parse("squad", ["--model_load_dir", two_heads, "--hidden_size", "64", "--seq_length", "32"])
    checkpoint = read_checkpoint(two_heads)
    config = cfg.resolve_bert_config(args, checkpoint[0])
    report = load_into(BertForQuestionAnswering(config), checkpoint, two_heads, "oneflow")
    assert report.missing == ["qa_outputs.bias", "qa_outputs.weight"]


@pytest.mark.parametrize("argv,expected", [
    (["--hidden_size", "64"],
     "--hidden_size 64 is not a multiple of --num_attention_heads 12 (the default): every attention head gets "
     "hidden_size / num_attention_heads dimensions"),
    (["--hidden_size", "64", "--num_attention_heads", "3"], "--hidden_size 64 is not a multiple of --num_attention_heads 3:"),
    (["--max_position_embeddings", "48", "--seq_length", "64"],
     "--seq_length 64 exceeds --max_position_embeddings 48: --seq_length must be <= max_position_embeddings"),
    (["--max_position_embeddings", "64"], "--seq_length 128 (the default) exceeds --max_position_embeddings 64"),
    (["--hidden_size", "64", "--num_attention_heads", "2", "--hidden_size_per_head", "16"],
     "--hidden_size_per_head 16 disagrees with --hidden_size 64 / --num_attention_heads 2 = 32 per head"),
])
def test_without_a_checkpoint_the_flags_alone_must_fit(argv, expected):
    with pytest.raises(cfg.UsageError) as caught:
        cfg.resolve_bert_config(parse("pretrain", argv))
    assert one_line(caught).startswith(expected)


def test_without_a_checkpoint_the_flags_describe_the_model():
    config = cfg.resolve_bert_config(parse("squad", ["--num_attention_heads", "2", "--hidden_size_per_head", "16",
                                                     "--max_position_embeddings", "64", "--seq_length", "64"]))
    assert (config.hidden_size, config.intermediate_size, config.max_position_embeddings) == (32, 128, 64)
    assert cfg.resolve_bert_config(parse("infer", [])).max_position_embeddings == 512  # no --seq_length: not compared


def test_a_bad_config_file_is_a_checkpoint_error(two_heads, tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 64, "num_attention_heads": 12}')
    with pytest.raises(CheckpointError, match="config.json: cannot read BertConfig: hidden_size 64 is not a multiple"):
        read_checkpoint_and_config(two_heads, config_file=str(tmp_path / "config.json"))
