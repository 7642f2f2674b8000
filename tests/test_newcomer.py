"""What a fresh clone stumbled on (issue 16): checkpoints that carry their vocab and lower-casing, WikiText's
placeholders normalized away, logs without progress-bar frames or CPU-only OneFlow noise, and --help with defaults."""
import argparse
import io
import json
import os
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from tqdm import tqdm

import dataset
import draw_loss_curve
import run_infer
import run_squad
from modeling import BertConfig, BertForQuestionAnswering
from runs import PYTHON, ROOT, TINY_MODEL
from utils import (benchmark, benchmark_infer, compare_lazy_outputs, config as cfg, export_onnx, squad_evaluate,
                   task_flags, tokenizer_settings, trainer)
from utils.checkpoints import export_hf, native
from utils.data import (benchmark_create_pretraining_data, create_pretraining_data as cpd, prepare, sentences,
                        squad_features, train_vocab, wikipedia)
from utils.data.instances import InstanceOptions
from utils.data.normalize import keep_unk_token, normalize_document, normalize_wikitext
from utils.data.tokenization import load_wordpiece_tokenizer
from utils.oneflow_logs import NVIDIA_DRIVER
from utils.paths import DEMO_DATA_DIR
from utils.progress import LogLines, progress_bar
from utils.tokenizer_settings import TokenizerSettings

SEQ, MAX_PRED = 32, 5  # runs.TINY_MODEL's
# A cased vocab of 64 tokens at most (TINY_MODEL's vocab_size), with the pieces BERT splits "<unk>" and "@-@" into.
TOKENS = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<", ">", "@", "-", ",", ".", "[", "]", "un", "##k"]
          + "The the It it river rises in hills is a well known of miles long near harbor flows on to sea old town "
            "boat sails people live there 1 000 3 5".split())
WIKITEXT_DOCUMENT = [
    "The river rises in the <unk> hills .",
    "It is a well @-@ known river of 1 @,@ 000 miles .",
    "The river is 3 @.@ 5 miles long near the <unk> harbor .",
    "It flows on to the sea .",
    "The old town near the river is well @-@ known .",
]
PLAIN_DOCUMENT = [
    "The boat sails on the sea .",
    "It is near the old harbor .",
    "The people of the town live there .",
    "The old boat is a well known boat .",
]
PIECES_OF_MARKERS = ("<", ">", "@", "un", "##k")


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    return str(path)


def make_data(vocab_file, out, normalize=True):
    """Pre-training records of 3 WikiText-like and 3 plain documents, cased (do_lower_case False)."""
    documents = [WIKITEXT_DOCUMENT, PLAIN_DOCUMENT] * 2 + [WIKITEXT_DOCUMENT, PLAIN_DOCUMENT[::-1]]
    instances = InstanceOptions(seq_length=SEQ, max_predictions_per_seq=MAX_PRED, dupe_factor=2,
                                do_lower_case=False, normalize_wikitext=normalize)
    options = cpd.PipelineOptions(str(out), vocab_file, instances)
    summary = cpd.write_pretraining_data(cpd.Corpus(iter(documents)), options)
    return summary, original_ids(str(out))


def original_ids(directory):
    """Every record's input_ids with the masked positions restored from masked_lm_ids."""
    index = dataset.RecordIndex(directory, dataset.pretraining_schema(SEQ, MAX_PRED))
    batch = dataset.RecordLoader(index, step_size=len(index), shuffle=False).load_batch(0)
    ids = batch["input_ids"].copy()
    rows, slots = np.nonzero(batch["masked_lm_weights"] > 0)
    ids[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][rows, slots]
    return ids


# ---------------------------------------------------------------- item 3: WikiText placeholders


def test_wikitext_markers_become_text():
    assert normalize_wikitext("It is a well @-@ known river of 1 @,@ 000 miles .") == \
        "It is a well-known river of 1,000 miles ."
    assert normalize_wikitext("The river is 3 @.@ 5 miles long near the <unk> harbor .") == \
        "The river is 3.5 miles long near the [UNK] harbor ."
    assert normalize_wikitext("born in 1932 @,@") == "born in 1932,"  # a joiner the sentence splitter left at the end
    assert normalize_document(WIKITEXT_DOCUMENT)[1] is True
    assert normalize_document(PLAIN_DOCUMENT) == (PLAIN_DOCUMENT, False)


def test_unk_survives_tokenization_as_the_single_unk_id(vocab_file):
    tokenizer = load_wordpiece_tokenizer(vocab_file, do_lower_case=False)
    sentence = "The river rises in the <unk> hills ."
    assert tokenizer.encode(sentence).tokens[5:9] == ["<", "un", "##k", ">"]  # what the demo model used to learn
    encoding = keep_unk_token(tokenizer).encode(normalize_wikitext(sentence))
    assert encoding.tokens == ["The", "river", "rises", "in", "the", "[UNK]", "hills", "."]
    assert encoding.ids[5] == TOKENS.index("[UNK]")


def test_pipeline_normalizes_wikitext_documents_only(vocab_file, tmp_path):
    summary, ids = make_data(vocab_file, tmp_path / "on")
    assert summary["normalize_wikitext"] is True and summary["train"]["wikitext_normalized_documents"] == 3
    assert not np.isin(ids, [TOKENS.index(t) for t in PIECES_OF_MARKERS]).any()
    assert (ids == TOKENS.index("[UNK]")).sum() > 0

    summary, ids = make_data(vocab_file, tmp_path / "off", normalize=False)
    assert summary["train"]["wikitext_normalized_documents"] == 0
    assert {"<", "@", "##k"} <= {TOKENS[i] for i in np.unique(ids)}


def test_demo_set_holds_no_unk_pieces():
    """The committed demo records (bert-base-uncased ids) were made with the normalization."""
    index = dataset.RecordIndex(DEMO_DATA_DIR, dataset.pretraining_schema(128, 20))
    batch = dataset.RecordLoader(index, step_size=len(index), shuffle=False).load_batch(0)
    ids = batch["input_ids"]
    unk_pieces = (ids[:, :-3] == 1026) & (ids[:, 1:-2] == 4895) & (ids[:, 2:-1] == 2243) & (ids[:, 3:] == 1028)
    assert not unk_pieces.any()  # "<", "un", "##k", ">"
    assert (ids == 100).sum() > 1000  # [UNK]


# ---------------------------------------------------------------- items 2, 5 and 6: one piped pre-training run


@pytest.fixture(scope="module")
def piped_run(vocab_file, tmp_path_factory):
    """run_pretraining.py (graph mode) on cased data, stdout and stderr into one pipe as `2>&1 | tee train.log` does,
    from an environment that has not set OneFlow's log level."""
    root = tmp_path_factory.mktemp("piped")
    make_data(vocab_file, root / "data")
    env = {name: value for name, value in os.environ.items() if not name.startswith("GLOG_")}
    result = subprocess.run([PYTHON, os.path.join(ROOT, "run_pretraining.py"), *TINY_MODEL, "--ofrecord_path",
                             str(root / "data"), "--train-batch-size", "4", "--train_steps", "2",
                             "--checkpoint_path", str(root / "checkpoints")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    log = result.stdout.decode()
    assert result.returncode == 0, log[-3000:]
    return log, str(root / "checkpoints")


def test_piped_log_has_progress_lines_and_no_carriage_returns(piped_run):
    log, _ = piped_run
    assert "\r" not in log
    assert "train:   0% 0/2" in log and "train: 100% 2/2" in log


def test_cpu_only_oneflow_noise_is_silenced(piped_run):
    log, _ = piped_run
    assert "Ones() is called in a nn.Graph" not in log
    if not os.path.exists(NVIDIA_DRIVER):
        assert "CUDA driver version is insufficient" not in log and "Failed to get cuda runtime version" not in log


def test_oneflow_errors_still_show():
    env = {name: value for name, value in os.environ.items() if not name.startswith("GLOG_")}
    result = subprocess.run([PYTHON, "-c", "import utils, oneflow as flow; flow.ones(2, 3).matmul(flow.ones(2, 3))"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "check_failed_error" in result.stderr


def test_pretraining_checkpoint_carries_the_data_vocab_and_lower_casing(piped_run, vocab_file):
    _, checkpoints = piped_run
    step = os.path.join(checkpoints, "step_00000002")
    with open(os.path.join(step, "vocab.txt"), "rb") as saved, open(vocab_file, "rb") as original:
        assert saved.read() == original.read()
    with open(os.path.join(step, "meta.json")) as f:
        assert json.load(f)["do_lower_case"] is False
    assert tokenizer_settings.of_checkpoint(checkpoints) == (os.path.join(step, "vocab.txt"), False)


def infer(argv, capsys):
    run_infer.main(["--mode", "eager", *argv])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_inference_takes_vocab_and_lower_casing_from_the_checkpoint(piped_run, capsys):
    _, checkpoints = piped_run
    (features,) = infer(["--model_path", checkpoints, "--task", "features", "--input_text", "The river"], capsys)
    assert features["tokens"] == ["[CLS]", "The", "river", "[SEP]"]  # cased, as the data was
    (typed,) = infer(["--model_path", checkpoints, "--task", "features", "--input_text", "The river",
                      "--do_lower_case=True"], capsys)
    assert typed["tokens"] == ["[CLS]", "the", "river", "[SEP]"]  # a typed flag wins
    (filled,) = infer(["--model_path", checkpoints, "--task", "fill_mask", "--input_text", "The river [MASK] ."],
                      capsys)
    assert len(filled["masks"][0]) == 5  # fill-mask runs without --vocab_file, as examples/infer.sh does


def test_squad_snapshot_carries_vocab_and_lower_casing(vocab_file, tmp_path):
    args = cfg.parse_args(run_squad.build_parser(), ["--do_lower_case=False", f"--model_save_dir={tmp_path / 'qa'}"])
    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    runner = SimpleNamespace(state_dict=dict)  # no optimizer state to save
    run_squad.save_snapshot(args, config, BertForQuestionAnswering(config), runner, vocab_file, 3, print)
    assert tokenizer_settings.of_checkpoint(str(tmp_path / "qa")) == \
        (str(tmp_path / "qa" / "step_00000003" / "vocab.txt"), False)

    loading = cfg.parse_args(run_squad.build_parser(), [f"--model_load_dir={tmp_path / 'qa'}"])
    assert task_flags.resolve_tokenizer(loading, loading.model_load_dir).endswith("step_00000003/vocab.txt")
    assert loading.do_lower_case is False


def test_older_layouts_keep_their_vocab(vocab_file, tmp_path):
    """SQuAD snapshots kept vocab.txt in the run root, and a TF checkpoint has it next to its prefix."""
    step = tmp_path / "squad" / "step_00000003"
    native.save_checkpoint(str(tmp_path / "squad"), 3, BertConfig(vocab_size=64), {}, {}, {}, keep=0)
    (tmp_path / "squad" / "vocab.txt").write_bytes(open(vocab_file, "rb").read())
    assert tokenizer_settings.of_checkpoint(str(step)).vocab_file == str(tmp_path / "squad" / "vocab.txt")
    assert tokenizer_settings.of_checkpoint(str(tmp_path / "squad" / "bert_model.ckpt")).vocab_file == \
        str(tmp_path / "squad" / "vocab.txt")


def test_data_vocab_is_found_again_by_its_checksum(vocab_file, tmp_path, monkeypatch):
    own_vocab = tmp_path / "vocab.txt"
    own_vocab.write_bytes(open(vocab_file, "rb").read())
    make_data(str(own_vocab), tmp_path / "data")
    assert tokenizer_settings.of_pretraining_data(str(tmp_path / "data")) == (str(own_vocab), False)

    moved = tmp_path / "shared" / "vocab" / "vocab.txt"  # the summary's path is gone; the shared folder has a copy
    moved.parent.mkdir(parents=True)
    os.replace(own_vocab, moved)
    monkeypatch.setenv("BERT_SHARED_DATA", str(tmp_path / "shared"))
    assert tokenizer_settings.of_pretraining_data(str(tmp_path / "data")).vocab_file == str(moved)
    moved.write_text(moved.read_text() + "extra\n")  # same name, another vocab: not taken
    assert tokenizer_settings.of_pretraining_data(str(tmp_path / "data")).vocab_file is None


def test_run_settings_prefer_typed_flags():
    found = TokenizerSettings("found/vocab.txt", False)
    untyped = argparse.Namespace(vocab_file=None, do_lower_case=None, explicit=set())
    assert tokenizer_settings.for_run(untyped, found) == ("found/vocab.txt", False)
    assert tokenizer_settings.for_run(untyped, TokenizerSettings()) == (None, True)
    typed = argparse.Namespace(vocab_file="mine.txt", do_lower_case=True, explicit={"vocab_file", "do_lower_case"})
    assert tokenizer_settings.for_run(typed, found) == ("mine.txt", True)


# ---------------------------------------------------------------- item 6: progress lines


def test_log_lines_are_whole_lines_at_most_every_interval():
    stream = io.StringIO()
    with LogLines(total=3, file=stream, desc="train", interval=3600) as bar:
        for step in range(3):
            bar.update(1)
            bar.set_postfix(step=step)
    assert "\r" not in stream.getvalue()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train:   0% 0/3") and lines[1].startswith("train: 100% 3/3")
    assert lines[1].endswith("step=2]")


def test_a_terminal_gets_the_redrawn_bar():
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal:
        bar = progress_bar(total=1, file=terminal)
        assert type(bar) is tqdm
        bar.close()
    os.close(primary)


# ---------------------------------------------------------------- item 7: --help shows defaults

ENTRY_POINTS = {
    "run_eager_pretraining.py": lambda argv: trainer.pretrain("eager", argv),
    "run_pretraining.py": lambda argv: trainer.pretrain("graph", argv),
    "run_squad.py": run_squad.main,
    "run_infer.py": run_infer.main,
    "draw_loss_curve.py": draw_loss_curve.main,
    "utils.squad_evaluate": squad_evaluate.main,
    "utils.compare_lazy_outputs": compare_lazy_outputs.main,
    "utils.checkpoints.export_hf": export_hf.main,
    "utils.data.prepare": prepare.main,
    "utils.data.create_pretraining_data": cpd.main,
    "utils.data.sentences": sentences.main,
    "utils.data.wikipedia": wikipedia.main,
    "utils.data.train_vocab": train_vocab.main,
    "utils.data.squad_features": squad_features.main,
    "utils.data.benchmark_create_pretraining_data": benchmark_create_pretraining_data.main,
    "utils.export_onnx": export_onnx.main,
    "utils.benchmark": benchmark.main,
    "utils.benchmark_infer": benchmark_infer.main,
}


class ParserBuilt(Exception):
    def __init__(self, parser):
        super().__init__()
        self.parser = parser


def entry_point_parser(main, monkeypatch):
    """The parser a script's main builds, caught when it starts parsing."""
    def catch(parser, args=None, namespace=None):
        raise ParserBuilt(parser)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(ParserBuilt) as built:
        main([])
    return built.value.parser


def help_entries(parser):
    """{first option string: its lines in --help}."""
    entries, current = {}, None
    for line in parser.format_help().splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = [line]
        elif current and line.startswith("    "):
            entries[current].append(line)
        else:
            current = None
    return {option: " ".join(lines) for option, lines in entries.items()}


def module_main(name):
    return lambda argv: __import__(name, fromlist=["main"]).main(argv)


@pytest.mark.parametrize("script", sorted(ENTRY_POINTS))
def test_help_shows_every_default(script, monkeypatch):
    parser = entry_point_parser(ENTRY_POINTS.get(script) or module_main(script), monkeypatch)
    entries = help_entries(parser)
    flags = [a for a in parser._actions
             if a.option_strings and a.default not in (None, argparse.SUPPRESS) and a.dest != "help"]
    assert flags
    assert [a.option_strings[0] for a in flags if "default" not in entries[a.option_strings[0]]] == []
