"""run_squad.py end to end on tiny models and small slices of the shared SQuAD sets (graph and eager)."""
import json
import os
import re

import numpy as np
import pytest

import run_squad
from modeling import BertConfig, BertForPreTraining
from runs import run as run_script
from utils import config as cfg
from utils.checkpoints import native
from utils.squad.features import build_features
from utils.paths import shared_data_path

VOCAB = shared_data_path("vocab", "bert-base-uncased-vocab.txt")
TINY_CONFIG = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)
TINY = ["--num_hidden_layers=2", "--num_attention_heads=2", "--hidden_size_per_head=16", "--intermediate_size=64",
        "--max_position_embeddings=64", "--vocab_size=30522", "--seq_length=64", "--doc_stride=32",
        "--max_query_length=16", "--hidden_dropout_prob=0", "--attention_probs_dropout_prob=0"]
SEED_LINE = re.compile(r"^step: \d+, total_loss: \d+\.\d{3}, throughput: \d+\.\d{3}, epoch: \d+ \d+\.\d+$")


def slice_squad(version, path, articles=2, paragraphs=2):
    """The first paragraphs of the first articles of a shared dev set, as a SQuAD JSON file."""
    source = shared_data_path("squad", version, "dev.json")
    if not (os.path.isfile(source) and os.path.isfile(VOCAB)):
        pytest.skip(f"shared SQuAD data or vocab not found under {shared_data_path()}")
    with open(source) as f:
        data = json.load(f)
    data["data"] = [dict(a, paragraphs=a["paragraphs"][:paragraphs]) for a in data["data"][:articles]]
    with open(path, "w") as f:
        json.dump(data, f)
    return path, [qa["id"] for a in data["data"] for p in a["paragraphs"] for qa in p["qas"]]


@pytest.fixture(scope="module")
def squad_v1(tmp_path_factory):
    return slice_squad("v1.1", str(tmp_path_factory.mktemp("data") / "v1.1.json"))


@pytest.fixture(scope="module")
def squad_v2(tmp_path_factory):
    return slice_squad("v2.0", str(tmp_path_factory.mktemp("data") / "v2.0.json"))


@pytest.fixture(scope="module")
def pretraining_checkpoint(tmp_path_factory):
    """A tiny pre-training checkpoint (encoder + MLM/NSP heads), as run_pretraining.py saves it."""
    root = str(tmp_path_factory.mktemp("pretrained"))
    model = BertForPreTraining(TINY_CONFIG)
    native.save_checkpoint(root, 1, TINY_CONFIG, model.state_dict(), {}, {"world_size": 1}, keep=0)
    return root


def read_json(path):
    with open(path) as f:
        return json.load(f)


def squad_main(argv, capsys):
    summary = run_squad.main(argv)
    captured = capsys.readouterr()
    return summary, captured.out, captured.err


def test_seed_command_line_parses():
    """The seed README's run_squad.sh flags, spelled as there (tiny sizes where they are numbers of layers)."""
    argv = ["--model=SQuAD", "--do_train=True", "--do_eval=True", "--gpu_num_per_node=1", "--learning_rate=3e-5",
            "--batch_size_per_device=16", "--eval_batch_size_per_device=16", "--num_epoch=3", "--use_fp16",
            "--version_2_with_negative=False", "--loss_print_every_n_iter=20", "--do_lower_case=True",
            "--seq_length=384", "--num_hidden_layers=2", "--num_attention_heads=2", "--max_position_embeddings=512",
            "--type_vocab_size=2", "--vocab_size=30522", "--attention_probs_dropout_prob=0.1",
            "--hidden_dropout_prob=0.1", "--hidden_size_per_head=64", "--train_data_dir=/d/train-v1.1",
            "--train_example_num=88614", "--eval_data_dir=/d/dev-v1.1", "--eval_example_num=10833", "--log_dir=./log",
            "--model_load_dir=snapshot", "--save_last_snapshot=True", "--model_save_dir=./squad_snapshots",
            "--vocab_file=vocab.txt", "--predict_file=dev-v1.1.json", "--output_dir=./squad_output"]
    args = cfg.parse_args(run_squad.build_parser(), argv)
    assert (args.model, args.do_train, args.do_eval, args.use_fp16, args.version_2_with_negative) == \
        ("SQuAD", True, True, True, False)
    assert (args.learning_rate, args.num_epoch, args.seq_length, args.train_example_num) == (3e-5, 3, 384, 88614)
    assert (args.batch_size_per_device, args.eval_example_num, args.save_last_snapshot) == (16, 10833, True)
    assert cfg.bert_config_from_args(args).hidden_size == 128
    assert args.mode == "graph" and args.warmup_proportion == 0.1 and args.weight_decay == 0.01
    assert {"num_hidden_layers", "hidden_size_per_head", "seq_length"} <= args.explicit


def test_seed_command_on_prebuilt_records(squad_v1, tmp_path):
    """Graph mode on prebuilt OFRecord dirs (the seed tarball's layout); the seed's log line; counts checked."""
    path, question_ids = squad_v1
    settings = dict(max_seq_length=64, doc_stride=32, max_query_length=16, progress=False)
    train = build_features(path, VOCAB, str(tmp_path / "train-v1.1"), True, **settings)
    dev = build_features(path, VOCAB, str(tmp_path / "dev-v1.1"), False, **settings)
    assert dev.num_features % 7 != 0  # the last eval batch is padded
    argv = ["--model=SQuAD", "--do_train=True", "--do_eval=True", "--gpu_num_per_node=1", "--learning_rate=1e-3",
            "--batch_size_per_device=8", "--eval_batch_size_per_device=7", "--num_epoch=0.5", "--use_fp16",
            "--version_2_with_negative=False", "--loss_print_every_n_iter=2", "--do_lower_case=True", *TINY,
            f"--train_data_dir={train.data_dir}", f"--train_example_num={train.num_features}",
            f"--eval_data_dir={dev.data_dir}", f"--eval_example_num={dev.num_features}",
            f"--log_dir={tmp_path / 'log'}", f"--vocab_file={VOCAB}", f"--predict_file={path}",
            f"--output_dir={tmp_path / 'out'}"]
    result = run_script("run_squad.py", argv, timeout=300)
    lines = [line for line in result.stdout.splitlines() if line.startswith("step: ")]
    assert len(lines) == 3 and all(SEED_LINE.match(line) for line in lines), lines  # 6 steps, printed every 2
    assert "--use_fp16 has no effect on CPU" in result.stderr
    predictions = read_json(tmp_path / "out" / "predictions.json")
    assert sorted(predictions) == sorted(question_ids)
    scores = json.loads(result.stdout.strip().splitlines()[-2])
    assert set(scores) == {"exact_match", "f1"}
    assert read_json(tmp_path / "out" / "eval_results.json")["scores"] == scores
    with open(tmp_path / "log" / "run_squad.log") as f:
        assert [line for line in f.read().splitlines() if line.startswith("step: ")] == lines

    bad = run_script("run_squad.py", argv + [f"--train_example_num={train.num_features + 1}"], check=False)
    assert bad.returncode == 2
    assert f"--train_example_num {train.num_features + 1} does not match the {train.num_features}" in bad.stderr


def test_graph_and_eager_agree_from_a_pretraining_checkpoint(squad_v1, pretraining_checkpoint, tmp_path, capsys):
    """--train_file/--predict_file build their own features; the pre-training encoder loads and the QA head is
    new; graph and eager train to the same logits; the saved model predicts the same again (--eval_steps)."""
    path, question_ids = squad_v1
    common = ["--do_train=True", "--do_eval=True", f"--model_load_dir={pretraining_checkpoint}", *TINY,
              f"--train_file={path}", f"--predict_file={path}", f"--vocab_file={VOCAB}", "--learning_rate=1e-3",
              "--batch_size_per_device=8", "--eval_batch_size_per_device=7", "--train_steps=4",
              "--loss_print_every_n_iter=1"]
    nbest = {}
    for mode in ("graph", "eager"):
        out_dir = tmp_path / mode
        summary, out, err = squad_main(common + [f"--mode={mode}", f"--output_dir={out_dir}",
                                                 "--save_last_snapshot", f"--model_save_dir={out_dir / 'model'}"],
                                       capsys)
        assert "newly initialized (2): qa_outputs.bias, qa_outputs.weight" in out
        assert "cls.seq_relationship.weight" in out.split("unused from checkpoint")[1]
        assert summary["train_steps"] == 4 and summary["scores"]["exact_match"] >= 0
        assert os.path.isfile(out_dir / "features" / "train" / "features_meta.json")
        assert sorted(read_json(out_dir / "predictions.json")) == sorted(question_ids)
        nbest[mode] = read_json(out_dir / "nbest_predictions.json")
    for qid in question_ids:
        graph, eager = nbest["graph"][qid][0], nbest["eager"][qid][0]
        assert graph["text"] == eager["text"]
        assert graph["start_logit"] == pytest.approx(eager["start_logit"], abs=1e-4)  # training moves them ~0.1

    summary, out, _ = squad_main(["--do_eval=True", "--mode=eager", f"--model_load_dir={tmp_path / 'eager' / 'model'}",
                                  *TINY, f"--predict_file={path}", "--eval_batch_size_per_device=7", "--eval_steps=2",
                                  f"--output_dir={tmp_path / 'reloaded'}"], capsys)
    partial = read_json(tmp_path / "reloaded" / "nbest_predictions.json")
    assert 0 < len(partial) < len(question_ids) and f"scoring the {len(partial)} of {len(question_ids)}" in out
    for qid, entries in partial.items():
        assert entries[0]["start_logit"] == pytest.approx(nbest["eager"][qid][0]["start_logit"], abs=1e-5)


def test_v2_writes_null_odds_for_every_question(squad_v2, tmp_path, capsys):
    path, question_ids = squad_v2
    summary, out, _ = squad_main(["--do_train=True", "--do_eval=True", "--mode=eager", "--version_2_with_negative",
                                  *TINY, f"--train_file={path}", f"--predict_file={path}", f"--vocab_file={VOCAB}",
                                  "--batch_size_per_device=8", "--eval_batch_size_per_device=10", "--train_steps=3",
                                  f"--output_dir={tmp_path}"], capsys)
    assert summary["features"] % 10 != 0
    predictions = read_json(tmp_path / "predictions.json")
    null_odds = read_json(tmp_path / "null_odds.json")
    assert sorted(predictions) == sorted(null_odds) == sorted(question_ids)
    assert all(np.isfinite(v) for v in null_odds.values())
    for qid, odds in null_odds.items():  # "" exactly when the null score beats the best span by the threshold
        assert (predictions[qid] == "") == (odds > 0.0)
    scores = json.loads(out.strip().splitlines()[-2])
    assert {"exact", "f1", "HasAns_exact", "NoAns_exact", "best_f1_thresh"} <= set(scores)
    assert scores["HasAns_total"] + scores["NoAns_total"] == len(question_ids)

    with pytest.raises(SystemExit):
        run_squad.main(["--do_eval=True", *TINY, f"--predict_file={path}", f"--vocab_file={VOCAB}",
                        f"--output_dir={tmp_path}"])
    assert "is SQuAD v2.0: pass --version_2_with_negative=True" in capsys.readouterr().err
