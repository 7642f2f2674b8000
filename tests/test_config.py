"""Flags: the seed's spellings, bool forms, derived defaults, hardware rule, size checks."""
import os

import pytest

from runs import TINY_MODEL, run
from synthetic import write_synthetic_dataset
from utils import config as cfg
from utils.runtime import check_distributed
from utils.trainer import build_parser, resolve_batch_sizes

SEED_EAGER = ("--train-batch-size 32 --lr 0.001 --num_hidden_layers 12 --num_attention_heads 12 "
              "--max_position_embeddings 512 --seq_length 128 --vocab_size 30522 --type_vocab_size 2 "
              "--attention_probs_dropout_prob 0.1 --hidden_dropout_prob 0.1 --max_predictions_per_seq 20 "
              "--ofrecord_path /dataset/bert/of_wiki_seq_len_128").split()
SEED_TABLE = ["--ofrecord_path", "--train-dataset-size", "--train-data-part", "--train-batch-size", "--val-batch-size",
              "--train-global-batch-size", "--val-global-batch-size", "--num_hidden_layers", "--num_attention_heads",
              "--max_position_embeddings", "--seq_length", "--vocab_size", "--type_vocab_size",
              "--attention_probs_dropout_prob", "--hidden_dropout_prob", "--max_predictions_per_seq", "--epochs",
              "--with-cuda", "--cuda_devices", "--optim_name", "--lr", "--weight_decay", "--warmup_proportion",
              "--loss_print_every_n_iters", "--val_print_every_n_iters", "--checkpoint_path", "--use_fp16",
              "--grad-acc-steps", "--nccl-fusion-threshold-mb", "--nccl-fusion-max-ops", "--use_ddp",
              "--use_consistent", "--metric-local"]


def parse(argv):
    return cfg.parse_args(build_parser("test"), argv)


def test_every_flag_of_the_seed_table_exists():
    options = build_parser("test")._option_string_actions
    assert [f for f in SEED_TABLE if f not in options] == []


def test_seed_readme_commands_parse():
    args = parse(SEED_EAGER)
    assert (args.train_batch_size, args.lr, args.ofrecord_path) == (32, 0.001, "/dataset/bert/of_wiki_seq_len_128")
    graph = parse(SEED_EAGER + ["--use_consistent", "--use_fp16"])
    assert graph.use_consistent is True and graph.use_fp16 is True
    assert parse(SEED_EAGER + ["--use_ddp"]).use_ddp is True


@pytest.mark.parametrize("argv,expected", [
    ([], False), (["--use_fp16"], True), (["--use_fp16=True"], True), (["--use_fp16", "False"], False),
    (["--use_fp16=false"], False), (["--use_fp16", "1"], True), (["--use_fp16", "--lr", "0.1"], True),
])
def test_bool_flags_bare_or_with_a_value(argv, expected):
    assert parse(argv).use_fp16 is expected


def test_bad_bool_value_is_rejected():
    with pytest.raises(SystemExit):
        parse(["--use_fp16=maybe"])


def test_hidden_and_intermediate_defaults_derive_from_heads():
    config = cfg.bert_config_from_args(parse(["--num_attention_heads", "4"]))
    assert (config.hidden_size, config.intermediate_size) == (256, 1024)
    config = cfg.bert_config_from_args(parse(["--num_attention_heads", "4", "--hidden_size", "128"]))
    assert (config.hidden_size, config.intermediate_size) == (128, 512)
    config = cfg.bert_config_from_args(parse(["--hidden_size", "96", "--num_attention_heads", "3",
                                              "--intermediate_size", "100"]))
    assert config.intermediate_size == 100


def test_explicit_flags_are_recorded():
    args = parse(["--num_hidden_layers=6", "--hidden_size", "384", "--lr", "1e-3"])
    assert cfg.explicit_bert_fields(args) == {"num_hidden_layers": 6, "hidden_size": 384}


def test_cuda_only_flags_warn_once_and_fall_back_to_cpu_fp32(capfd):
    args = cfg.resolve_hardware(parse(["--use_fp16", "--with-cuda", "--nccl-fusion-threshold-mb", "0"]))
    assert (args.device, args.use_fp16, args.with_cuda) == ("cpu", False, False)
    err = capfd.readouterr().err
    assert err.count("WARNING") == 3
    assert "--use_fp16 has no effect on CPU" in err and "CUDA is not available" in err and "NCCL" in err
    assert cfg.resolve_hardware(parse([])).with_cuda is False


def test_global_batch_size_must_agree():
    args = parse(["--train-batch-size", "8", "--grad-acc-steps", "2", "--train-global-batch-size", "32"])
    resolve_batch_sizes(args, world=2)
    assert args.train_global_batch_size == 32
    with pytest.raises(cfg.UsageError, match="--train-global-batch-size 16 != --train-batch-size 8"):
        resolve_batch_sizes(parse(["--train-batch-size", "8", "--train-global-batch-size", "16",
                                   "--grad-acc-steps", "2"]), world=2)


def test_nonsense_combinations_are_errors():
    args = cfg.resolve_hardware(parse(["--use_ddp", "--use_consistent"]))
    with pytest.raises(cfg.UsageError, match="pick one"):
        check_distributed(args, "eager")
    with pytest.raises(cfg.UsageError, match="use run_eager_pretraining.py"):
        check_distributed(cfg.resolve_hardware(parse(["--use_ddp"])), "graph")


def test_data_flags_that_disagree_with_the_files_stop_the_run(tmp_path):
    data = write_synthetic_dataset(str(tmp_path / "data"), num_records=64, num_parts=2, val_records=0)
    base = [*TINY_MODEL, "--ofrecord_path", data, "--train_steps", "1", "--checkpoint_path", str(tmp_path / "c")]
    result = run("run_eager_pretraining.py", base + ["--train-data-part", "64"], check=False)
    assert result.returncode == 2
    assert f"error: {data}: holds 2 part files but --train-data-part says 64" in result.stderr
    result = run("run_eager_pretraining.py", base + ["--train-dataset-size", "100"], check=False)
    assert "holds 64 records but --train-dataset-size says 100" in result.stderr
    result = run("run_eager_pretraining.py", base[:-4] + ["--ofrecord_path", str(tmp_path / "nope"),
                                                         "--checkpoint_path", str(tmp_path / "c")], check=False)
    assert result.returncode == 2 and "nope: data directory does not exist" in result.stderr
    assert not os.path.exists(tmp_path / "c")
