"""Fine-tune and evaluate BERT on SQuAD v1.1 / v2.0 (graph mode by default, or --mode eager).

The model and loss are Google BERT's run_squad.py (Devlin et al. 2018): a linear start/end head on the
encoder, loss = mean of the start and end cross-entropies. The optimizer is AdamW with gradient clipping at 1.0,
linear warmup over --warmup_proportion of the steps then linear decay to 0, in Hugging Face's recipe by default
(--optimizer_recipe, utils/optim.py).
Training and prediction run through utils/runtime.py, so eager and graph compute the same step.

Data: --train_file / --predict_file take SQuAD JSON and build features (cached under --output_dir/features);
--train_data_dir / --eval_data_dir take prebuilt OFRecords in the seed's layout. The last eval batch is padded
and its padded rows dropped, so any eval set size works.
"""
import utils  # noqa: F401  (first: it prepares numpy and OneFlow, see utils/__init__.py)
import argparse
import json
import os
import time
from dataclasses import replace

import numpy as np
import oneflow as flow

import dataset
from modeling import BertForQuestionAnswering, squad_loss
from utils import config as cfg
from utils import interrupts, task_flags
from utils.checkpoints import native
from utils.squad.features import (SIDE_FILE, SquadDataError, build_features, check_room_for_context,
                                       load_eval_side_file)
from utils.metrics import StepWindow, format_train_line
from utils.optim import build_lr_scheduler, build_optimizer
from utils.progress import progress_bar
from utils.squad.evaluate import data_version, evaluate
from utils.squad.postprocess import predictions_from_side_data, write_predictions
from utils.tokenizer_settings import TokenizerSettings
from utils.runtime import (Placement, Task, build_bert, build_runner, check_finite_loss, distribute,
                           log)

TRAIN_FIELDS = ("input_ids", "input_mask", "segment_ids", "start_positions", "end_positions")
EVAL_FIELDS = ("input_ids", "input_mask", "segment_ids")
CLIP_GRAD_MAX_NORM = 1.0
OPTIMIZER = "adamw"


def squad_train_outputs(model, inputs):
    input_ids, input_mask, segment_ids, start_positions, end_positions = inputs
    start_logits, end_logits = model(input_ids, input_mask, segment_ids)
    return (squad_loss(start_logits, end_logits, start_positions, end_positions),)


def squad_eval_outputs(model, inputs):
    return model(*inputs)


SQUAD = Task(train_fields=TRAIN_FIELDS, train_outputs=squad_train_outputs, num_losses=1, eval_fields=EVAL_FIELDS,
             eval_outputs=squad_eval_outputs)


def build_parser():
    parser = argparse.ArgumentParser(description="BERT fine-tuning and evaluation on SQuAD v1.1/v2.0")
    cfg.add_model_args(parser)
    cfg.add_hardware_args(parser)
    task_flags.add_squad_args(parser)
    parser.set_defaults(seq_length=384)
    return parser


class RunLog:
    """Prints on rank 0 (clear of the progress bar) and, with --log_dir, appends the lines to LOG_DIR/run_squad.log."""

    def __init__(self, log_dir):
        self.path = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            self.path = os.path.join(log_dir, "run_squad.log")

    def __call__(self, message):
        log(message)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(message + "\n")


# ---------------------------------------------------------------- data


def check_count(actual, expected, flag, directory):
    if expected is not None and expected != actual:
        raise cfg.UsageError(f"{flag} {expected} does not match the {actual} features in {directory}")


def feature_settings(args, vocab_file):
    return dict(vocab_file=vocab_file, version_2_with_negative=args.version_2_with_negative,
                max_seq_length=args.seq_length, doc_stride=args.doc_stride, max_query_length=args.max_query_length,
                do_lower_case=args.do_lower_case)


def training_index(args, vocab_file, config):
    """The training records: built from --train_file (cached) or prebuilt in --train_data_dir."""
    if args.train_file and args.train_data_dir:
        raise cfg.UsageError("--train_file and --train_data_dir both given: pass one")
    if args.train_file:
        built = build_features(args.train_file, output_dir=os.path.join(args.output_dir, "features", "train"),
                               is_training=True, **feature_settings(args, vocab_file))
        directory = built.data_dir
    elif args.train_data_dir:
        directory = args.train_data_dir
    else:
        raise cfg.UsageError("--do_train needs --train_file SQUAD.json or --train_data_dir OFRECORD_DIR")
    index = dataset.RecordIndex(directory, dataset.squad_train_schema(args.seq_length, config.vocab_size,
                                                                      config.type_vocab_size))
    check_count(len(index), args.train_example_num, "--train_example_num", directory)
    return index


def eval_data(args, vocab_file, config):
    """(eval record index, side data for post-processing): from --predict_file, or --eval_data_dir with its
    own side file or one built from --predict_file."""
    built = None
    if args.predict_file and not (args.eval_data_dir and os.path.isfile(os.path.join(args.eval_data_dir, SIDE_FILE))):
        built = build_features(args.predict_file, output_dir=os.path.join(args.output_dir, "features", "eval"),
                               is_training=False, **feature_settings(args, vocab_file))
    if args.eval_data_dir:
        directory, side_file = args.eval_data_dir, os.path.join(args.eval_data_dir, SIDE_FILE)
        if built is not None:
            side_file = built.side_file
        elif not os.path.isfile(side_file):
            raise cfg.UsageError(f"--eval_data_dir {directory} has no {SIDE_FILE}: pass --predict_file, the SQuAD "
                                 "JSON it was built from, so that answers can be mapped back to text")
    elif built is not None:
        directory, side_file = built.data_dir, built.side_file
    else:
        raise cfg.UsageError("--do_eval needs --predict_file SQUAD.json (or --eval_data_dir OFRECORD_DIR)")
    index = dataset.RecordIndex(directory, dataset.squad_eval_schema(args.seq_length, config.vocab_size,
                                                                     config.type_vocab_size))
    side = load_eval_side_file(side_file)
    if len(side.features) != len(index):
        raise dataset.DataError(f"{directory} holds {len(index)} eval records but {side_file} describes "
                                f"{len(side.features)} features: they were not built from the same data and settings")
    if bool(side.settings["version_2_with_negative"]) != args.version_2_with_negative:
        raise cfg.UsageError(f"{side_file} was built with version_2_with_negative="
                             f"{side.settings['version_2_with_negative']}: pass the same --version_2_with_negative")
    check_count(len(index), args.eval_example_num, "--eval_example_num", directory)
    return index, side


def check_data_version(args):
    """A v2.0 file scored as v1.1 (or the reverse) gives meaningless numbers: refuse it up front."""
    for flag in ("train_file", "predict_file"):
        path = getattr(args, flag)
        if not path:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                version = data_version(json.load(f))
        except (OSError, ValueError) as e:
            raise SquadDataError(f"--{flag} {path}: not a readable SQuAD JSON file ({e})") from None
        if (version == 2) != args.version_2_with_negative:
            raise cfg.UsageError(f"--{flag} {path} is SQuAD v{'2.0' if version == 2 else '1.1'}: pass "
                                 f"--version_2_with_negative={'True' if version == 2 else 'False'}")


# ---------------------------------------------------------------- training


def loss_line(window, step, epoch, batch_size):
    """The seed's SQuAD line from a window of host losses: step, total_loss, throughput (samples/s), epoch."""
    (total,), steps, seconds = window.take()
    return format_train_line({"step": step, "total_loss": total / steps, "throughput": steps * batch_size / seconds,
                              "epoch": epoch})


def total_train_steps(train_steps, num_epoch, steps_per_epoch):
    """--train_steps when given, else --num_epoch epochs rounded to whole steps (at least one)."""
    return train_steps if train_steps is not None else max(1, round(num_epoch * steps_per_epoch))


def training_loader(index, batch_size, seed):
    """The training batches: each epoch a permutation of the features seeded by seed + epoch."""
    return dataset.RecordLoader(index, batch_size, shuffle=True, seed=seed)


def train(args, model, placement, index, run_log):
    """Fine-tunes in place; returns (runner, timing dict)."""
    batch_size = args.batch_size_per_device
    loader = training_loader(index, batch_size, args.seed)
    steps_per_epoch = loader.steps_per_epoch
    total_steps = total_train_steps(args.train_steps, args.num_epoch, steps_per_epoch)
    warmup_steps = int(args.warmup_proportion * total_steps)
    optimizer = build_optimizer(model, OPTIMIZER, args.learning_rate, args.weight_decay, CLIP_GRAD_MAX_NORM,
                                args.optimizer_recipe)
    lr_scheduler = build_lr_scheduler(optimizer, total_steps, warmup_steps, args.optimizer_recipe)
    runner = build_runner(args.mode, SQUAD, model, placement, optimizer, lr_scheduler, use_fp16=args.use_fp16)
    run_log(f"train: {len(index)} features, batch {batch_size}, {steps_per_epoch} steps/epoch, {total_steps} steps "
            f"({total_steps / steps_per_epoch:.2f} epochs), warmup {warmup_steps}, lr {args.learning_rate}, "
            f"recipe {args.optimizer_recipe}, mode {args.mode}")
    window, real_tokens = StepWindow(), 0
    start = time.time()
    batches = iter(loader)
    # A context manager, so that an error line printed after a failure starts on a line of its own.
    with progress_bar(total=total_steps, desc="train", dynamic_ncols=True,
                      disable=flow.env.get_rank() != 0) as progress:
        for step in range(total_steps):
            batch = next(batches)
            real_tokens += int(batch["input_mask"].sum())
            loss = runner.train_step(batch)[0]
            window.add([check_finite_loss(loss, step, placement,
                                          "no model is saved (fine-tuning has no intermediate checkpoints)")])
            progress.update(1)
            if (step + 1) % args.loss_print_every_n_iter == 0 or step + 1 == total_steps:
                run_log(loss_line(window, step, step // steps_per_epoch, batch_size))
    seconds = time.time() - start
    loader.close()
    timing = {"train_steps": total_steps, "train_epochs": total_steps / steps_per_epoch, "train_seconds": seconds,
              "train_tokens_per_second": total_steps * batch_size * args.seq_length / seconds,
              "train_real_tokens_per_second": real_tokens / seconds}
    run_log(f"trained {total_steps} steps in {seconds:.1f} s: {timing['train_tokens_per_second']:.1f} tokens/s "
            f"({timing['train_real_tokens_per_second']:.1f} non-padding tokens/s)")
    return runner, timing


def save_snapshot(args, config, model, runner, vocab_file, step, run_log):
    path = native.save_checkpoint(args.model_save_dir, step, config, model.state_dict(), runner.state_dict(),
                                  {"task": "squad", "mode": args.mode, "world_size": 1, "optim_name": OPTIMIZER},
                                  keep=0, tokenizer=TokenizerSettings(vocab_file, args.do_lower_case))
    run_log(f"saved the fine-tuned model to {path}")


# ---------------------------------------------------------------- prediction


def predict_logits(runner, index, args):
    """{unique_id: (start_logits, end_logits)} for every eval record (or the first --eval_steps batches)."""
    loader = dataset.RecordLoader(index, args.eval_batch_size_per_device, shuffle=False, pad_last=True)
    steps = loader.steps_per_epoch if args.eval_steps is None else min(args.eval_steps, loader.steps_per_epoch)
    results = {}
    batches = iter(loader)
    for _ in progress_bar(range(steps), desc="predict", dynamic_ncols=True, disable=flow.env.get_rank() != 0):
        batch = next(batches)
        start_logits, end_logits = (t.numpy() for t in runner.eval_step(batch))
        for row in np.flatnonzero(batch["row_valid"] > 0):  # padded rows repeat a record: drop them
            results[int(batch["unique_ids"][row, 0])] = (start_logits[row], end_logits[row])
    loader.close()
    return results


def complete_subset(side, results):
    """The side data of the questions all of whose windows have logits, re-indexed from 0."""
    covered = {}
    for feature in side.features:
        covered[feature.example_index] = covered.get(feature.example_index, True) and feature.unique_id in results
    kept = [i for i in range(len(side.examples)) if covered.get(i)]
    new_index = {old: new for new, old in enumerate(kept)}
    features = [replace(f, example_index=new_index[f.example_index]) for f in side.features
                if f.example_index in new_index]
    return replace(side, examples=[side.examples[i] for i in kept], features=features)


def subset_dataset(dataset_json, question_ids):
    """The SQuAD JSON restricted to the given question ids (for scoring a partial --eval_steps run)."""
    articles = []
    for article in dataset_json["data"]:
        paragraphs = [dict(p, qas=[qa for qa in p["qas"] if qa["id"] in question_ids]) for p in article["paragraphs"]]
        paragraphs = [p for p in paragraphs if p["qas"]]
        if paragraphs:
            articles.append(dict(article, paragraphs=paragraphs))
    return dict(dataset_json, data=articles)


def predict_and_score(args, runner, index, side, run_log):
    start = time.time()
    results = predict_logits(runner, index, args)
    predict_seconds = time.time() - start
    scored = complete_subset(side, results)
    result = predictions_from_side_data(scored, results, args.n_best_size, args.max_answer_length,
                                        args.null_score_diff_threshold)
    paths = write_predictions(args.output_dir, result)
    questions, features = len(scored.examples), len(scored.features)
    run_log(f"predicted {features} features of {questions} questions in {predict_seconds:.1f} s; wrote "
            + ", ".join(paths.values()))
    summary = {"predict_seconds": predict_seconds, "questions": questions, "features": features}
    if not args.predict_file:
        run_log("no --predict_file: predictions were written but not scored")
        return summary
    with open(args.predict_file, encoding="utf-8") as f:
        gold = json.load(f)
    if questions < len(side.examples):
        run_log(f"--eval_steps {args.eval_steps}: scoring the {questions} of {len(side.examples)} questions "
                "whose windows were all predicted")
        gold = subset_dataset(gold, set(result.predictions))
    scores = evaluate(gold, result.predictions, result.null_odds)
    run_log(json.dumps(scores))
    summary["scores"] = scores
    return summary


# ---------------------------------------------------------------- the run


def resolve_vocab_file(args):
    vocab_file = task_flags.resolve_tokenizer(args, args.model_load_dir)
    if vocab_file is None and (args.train_file or args.predict_file):
        raise cfg.UsageError("--vocab_file is required to build features (the checkpoint has no vocab.txt)")
    return vocab_file


def check_args(args):
    if not (args.do_train or args.do_eval):
        raise cfg.UsageError("nothing to do: pass --do_train=True and/or --do_eval=True")
    if flow.env.get_world_size() > 1:
        raise cfg.UsageError("run_squad.py runs as a single process; launch it without oneflow.distributed.launch")
    if args.gpu_num_per_node != 1 and args.device == "cpu":
        cfg.warn(f"--gpu_num_per_node {args.gpu_num_per_node} is ignored on CPU: one process trains")
    check_room_for_context(args.seq_length, args.max_query_length, "--seq_length")
    if not args.do_train and not args.model_load_dir:
        cfg.warn("--do_eval without --do_train or --model_load_dir evaluates a randomly initialized model")
    native.check_writable(args.output_dir, "--output_dir")
    if args.do_train and args.save_last_snapshot:
        native.check_writable(args.model_save_dir, "--model_save_dir")


def run(args):
    start = time.time()
    cfg.check_flags(args)
    cfg.resolve_hardware(args)
    check_args(args)
    run_log = RunLog(args.log_dir)
    check_data_version(args)
    vocab_file = resolve_vocab_file(args)
    flow.manual_seed(args.seed)
    config, model, report = build_bert(args, BertForQuestionAnswering)
    if report:
        log(report.summary())
    placement = Placement(args.device, False)
    model = distribute(model, placement)
    train_index = training_index(args, vocab_file, config) if args.do_train else None
    eval_index, side = eval_data(args, vocab_file, config) if args.do_eval else (None, None)

    summary = {"mode": args.mode, "seq_length": args.seq_length, "batch_size": args.batch_size_per_device}
    if args.do_train:
        runner, timing = train(args, model, placement, train_index, run_log)
        summary.update(timing)
        if args.save_last_snapshot:
            save_snapshot(args, config, model, runner, vocab_file, timing["train_steps"], run_log)
    else:
        runner = build_runner(args.mode, SQUAD, model, placement, use_fp16=args.use_fp16)
    if args.do_eval:
        summary.update(predict_and_score(args, runner, eval_index, side, run_log))
    summary["wall_seconds"] = time.time() - start
    run_log(f"wall time {summary['wall_seconds']:.1f} s")
    if args.do_eval:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "eval_results.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    return summary


def main(argv=None):
    args = cfg.parse_args(build_parser(), argv)
    with interrupts.main_guard("run_squad.py", errors_exit_with=2):
        return run(args)


if __name__ == "__main__":
    main()
