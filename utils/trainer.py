"""The one pre-training core behind run_eager_pretraining.py and run_pretraining.py.

What a step computes is `pretraining_outputs` (forward, loss, metric counts), run by utils/runtime.py's eager
or graph runner. Everything else (data order, schedule, logging, validation, checkpoints, resume) is shared
by `pretrain()`.
"""
import argparse
import json
import os

import numpy as np
import oneflow as flow

import dataset
from modeling import BertForPreTraining, pretraining_loss
from utils import config as cfg
from utils import interrupts, tokenizer_settings
from utils.checkpoints import native
from utils.data.tokenization import load_vocab
from utils.metrics import StepWindow, format_train_line, format_val_line
from utils.optim import build_lr_scheduler, build_optimizer
from utils.paths import DEMO_DATA_DIR
from utils.progress import progress_bar
from utils.runtime import (Placement, Task, build_bert, build_runner, check_distributed, check_finite_loss,
                           distribute, log, watching_peers)

INPUT_FIELDS = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids",
                "masked_lm_weights", "next_sentence_labels")
TRAIN_OUTPUTS = ("total_loss", "mlm_loss", "nsp_loss", "mlm_correct", "mlm_count", "nsp_correct", "nsp_count")
EVAL_OUTPUTS = ("mlm_loss_sum", "mlm_count", "mlm_correct", "nsp_loss_sum", "nsp_count", "nsp_correct")


# ---------------------------------------------------------------- what a step computes


def _forward(model, inputs):
    input_ids, input_mask, segment_ids, positions, lm_ids, lm_weights, nsp_labels = inputs
    mlm_logits, nsp_logits = model(input_ids, input_mask, segment_ids, positions)
    return mlm_logits, nsp_logits, lm_ids.reshape(-1).to(flow.int64), lm_weights.reshape(-1), nsp_labels.reshape(-1).to(flow.int64)


def pretraining_outputs(model, inputs):
    """Loss to optimize and metric counts for one micro-batch; the body of every training step."""
    mlm_logits, nsp_logits, lm_ids, lm_weights, nsp_labels = _forward(model, inputs)
    total, mlm, nsp = pretraining_loss(mlm_logits, nsp_logits, lm_ids, lm_weights, nsp_labels)
    mlm_hit = (mlm_logits.reshape(lm_ids.shape[0], -1).argmax(-1) == lm_ids).to(flow.float32)
    nsp_hit = (nsp_logits.argmax(-1) == nsp_labels).to(flow.float32)
    nsp_count = flow.ones_like(nsp_hit).sum()
    return total, mlm, nsp, (mlm_hit * lm_weights).sum(), lm_weights.sum(), nsp_hit.sum(), nsp_count


def evaluation_outputs(model, inputs):
    """Sums over the real rows of a (possibly padded) validation batch; reduced over ranks by the caller."""
    *inputs, row_valid = inputs
    mlm_logits, nsp_logits, lm_ids, lm_weights, nsp_labels = _forward(model, inputs)
    predictions = lm_ids.shape[0] // row_valid.shape[0]
    token_valid = lm_weights * row_valid.unsqueeze(1).repeat(1, predictions).reshape(-1)
    mlm_ce = flow.nn.functional.cross_entropy(mlm_logits.reshape(lm_ids.shape[0], -1), lm_ids, reduction="none")
    nsp_ce = flow.nn.functional.cross_entropy(nsp_logits, nsp_labels, reduction="none")
    mlm_hit = (mlm_logits.reshape(lm_ids.shape[0], -1).argmax(-1) == lm_ids).to(flow.float32)
    nsp_hit = (nsp_logits.argmax(-1) == nsp_labels).to(flow.float32)
    return ((mlm_ce * token_valid).sum(), token_valid.sum(), (mlm_hit * token_valid).sum(),
            (nsp_ce * row_valid).sum(), row_valid.sum(), (nsp_hit * row_valid).sum())


PRETRAINING = Task(train_fields=INPUT_FIELDS, train_outputs=pretraining_outputs, num_losses=3,
                   eval_fields=INPUT_FIELDS + ("row_valid",), eval_outputs=evaluation_outputs)


# ---------------------------------------------------------------- the run


def build_parser(description):
    parser = argparse.ArgumentParser(description=description)
    cfg.add_model_args(parser)
    cfg.add_hardware_args(parser)
    cfg.add_pretraining_args(parser)
    return parser


def resolve_batch_sizes(args, world):
    derived = args.train_batch_size * args.grad_acc_steps * world
    if args.train_global_batch_size is not None and args.train_global_batch_size != derived:
        raise cfg.UsageError(
            f"--train-global-batch-size {args.train_global_batch_size} != --train-batch-size {args.train_batch_size} "
            f"x --grad-acc-steps {args.grad_acc_steps} x world size {world} = {derived}")
    args.train_global_batch_size = derived
    derived_val = args.val_batch_size * world
    if args.val_global_batch_size is not None and args.val_global_batch_size != derived_val:
        raise cfg.UsageError(f"--val-global-batch-size {args.val_global_batch_size} != --val-batch-size "
                             f"{args.val_batch_size} x world size {world} = {derived_val}")
    args.val_global_batch_size = derived_val


def build_loaders(args, config, world, rank, contiguous):
    train_dir = args.ofrecord_path or DEMO_DATA_DIR
    schema = dataset.pretraining_schema(args.seq_length, args.max_predictions_per_seq, config.vocab_size,
                                        config.type_vocab_size)
    train_index = dataset.RecordIndex(train_dir, schema, args.train_data_part, args.train_dataset_size)
    rows = dataset.data_parallel_rows(args.train_batch_size, world, rank, args.grad_acc_steps, contiguous)
    train = dataset.RecordLoader(train_index, args.train_global_batch_size, rows, shuffle=True, seed=args.seed)
    val_dir = args.val_ofrecord_path or os.path.join(train_dir, "val")
    val = None
    if os.path.isdir(val_dir):
        val_index = dataset.RecordIndex(val_dir, schema)
        val_rows = dataset.data_parallel_rows(args.val_batch_size, world, rank)
        val = dataset.RecordLoader(val_index, args.val_global_batch_size, val_rows, shuffle=False, pad_last=True)
    elif args.val_ofrecord_path:
        raise dataset.DataError(f"{val_dir}: validation directory does not exist (--val_ofrecord_path)")
    return train_dir, train, val


def record_metrics(path, kind, values):
    """Full-precision copy of a printed line, for comparing runs (the log keeps the seed's 3 decimals)."""
    if path and flow.env.get_rank() == 0:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(dict(values, kind=kind)) + "\n")


def validate(runner, loader, placement, args):
    totals = np.zeros(len(EVAL_OUTPUTS))
    for i, batch in enumerate(loader):
        if args.val_steps is not None and i >= args.val_steps:
            break
        outputs = runner.eval_step(batch)
        totals += [float(placement.to_host(o, not args.metric_local)) for o in outputs]
    values = dict(zip(EVAL_OUTPUTS, totals))
    loader.close()
    return {
        "mlm_acc": values["mlm_correct"] / max(values["mlm_count"], 1e-9),
        "nsp_acc": values["nsp_correct"] / max(values["nsp_count"], 1e-9),
        "mlm_loss": values["mlm_loss_sum"] / max(values["mlm_count"], 1e-9),
        "nsp_loss": values["nsp_loss_sum"] / max(values["nsp_count"], 1e-9),
    }


def train_line_values(window, step, epoch, placement, args, world):
    """The seed's training line from a window of device outputs (TRAIN_OUTPUTS): the metric counts and their
    reduction over ranks reach the host only here, when a line is printed (the loss is checked every step)."""
    sums, steps, seconds = window.take()
    values = dict(zip(TRAIN_OUTPUTS, (float(placement.to_host(o, not args.metric_local)) for o in sums)))
    ranks = 1 if (args.metric_local or placement.is_global) else world
    return {
        "step": step,
        "total_loss": values["total_loss"] / steps / ranks,
        "mlm_loss": values["mlm_loss"] / steps / ranks,
        "nsp_loss": values["nsp_loss"] / steps / ranks,
        "pred_acc": values["nsp_correct"] / max(values["nsp_count"], 1e-9),
        "mlm_acc": values["mlm_correct"] / max(values["mlm_count"], 1e-9),
        "throughput": steps * args.train_global_batch_size / seconds,
        "epoch": epoch,
    }


def pretrain(mode, argv=None):
    parser = build_parser(f"BERT pre-training ({mode} mode)")
    args = cfg.parse_args(parser, argv)
    with interrupts.main_guard(f"{mode} pre-training", errors_exit_with=2), watching_peers(args):
        run(args, mode)


def run(args, mode):
    cfg.check_flags(args)
    cfg.resolve_hardware(args)
    world, rank = flow.env.get_world_size(), flow.env.get_rank()
    check_distributed(args, mode)
    resolve_batch_sizes(args, world)
    if rank == 0:
        native.check_writable(args.checkpoint_path, "--checkpoint_path")
    flow.manual_seed(args.seed)
    placement = Placement(args.device, args.use_consistent)
    config, model, report = build_bert(args, BertForPreTraining)
    train_dir, train_loader, val_loader = build_loaders(args, config, world, rank,
                                                        contiguous=placement.is_global and mode == "graph")
    tokenizer = training_tokenizer(args, train_dir, config)
    steps_per_epoch = train_loader.steps_per_epoch
    total_steps = args.train_steps if args.train_steps is not None else args.epochs * steps_per_epoch
    warmup_steps = int(args.warmup_proportion * total_steps)

    if report:
        log(report.summary())
    model = distribute(model, placement, args.use_ddp)
    optimizer = build_optimizer(model, args.optim_name, args.lr, args.weight_decay, args.clip_grad_max_norm)
    lr_scheduler = build_lr_scheduler(optimizer, total_steps, warmup_steps)
    runner = build_runner(mode, PRETRAINING, model, placement, optimizer, lr_scheduler, args.grad_acc_steps,
                          args.use_fp16)

    start_step = 0
    if args.resume:
        start_step = resume(args, model, runner, train_loader, placement)
    elif native.list_checkpoints(args.checkpoint_path):
        raise cfg.UsageError(f"--checkpoint_path {args.checkpoint_path} already holds checkpoints: pass --resume to "
                             "continue that run, or choose an empty --checkpoint_path (nothing is overwritten)")
    runner.restart_random_streams(start_step)

    log(f"mode: {mode}{' ddp' if args.use_ddp else ''}{' global' if args.use_consistent else ''}, world size {world}, "
        f"device {args.device}, data {train_dir} ({len(train_loader.index)} records, {steps_per_epoch} steps/epoch), "
        f"global batch {args.train_global_batch_size}, steps {start_step}..{total_steps}")
    window = StepWindow()
    train_iter = iter(train_loader)
    # A context manager, so that an error line printed after a failure starts on a line of its own.
    with progress_bar(total=total_steps, initial=start_step, disable=rank != 0, dynamic_ncols=True,
                      desc="train") as progress:
        last_saved = start_step if args.resume else None
        for step in range(start_step, total_steps):
            outputs = runner.train_step(next(train_iter))
            check_finite_loss(outputs[0], step, placement, checkpoint_note(args.checkpoint_path, last_saved, step))
            window.add([o.detach() for o in outputs])
            progress.update(1)
            done = step + 1
            if done % args.loss_print_every_n_iters == 0 or done == total_steps:
                values = train_line_values(window, step, step // steps_per_epoch, placement, args, world)
                log(format_train_line(values))
                record_metrics(args.metrics_file, "train", values)
            validate_now = args.val_print_every_n_iters > 0 and done % args.val_print_every_n_iters == 0
            if val_loader is not None and (validate_now or done == total_steps):
                val_values = validate(runner, val_loader, placement, args)
                log(format_val_line(step // steps_per_epoch, step, val_values))
                record_metrics(args.metrics_file, "val", dict(val_values, step=step))
            if done % args.save_every_n_iters == 0 or done == total_steps:
                save(args, config, model, runner, train_loader, done, mode, world, tokenizer)
                last_saved = done
                runner.restart_random_streams(done)
    train_loader.close()


def checkpoint_note(root, last_saved, step):
    if last_saved is None:
        return f"no checkpoint was saved yet, {step} steps are lost"
    return f"--resume continues from step {last_saved} under {root} ({step - last_saved} steps are lost)"


def model_state(model):
    return model.module.state_dict() if hasattr(model, "module") else model.state_dict()


# What a resumed run must share with the run that saved the checkpoint, or the data position means other records.
RESUME_MUST_MATCH = {
    "train_global_batch_size": "--train-global-batch-size",
    "grad_acc_steps": "--grad-acc-steps",
    "seq_length": "--seq_length",
    "max_predictions_per_seq": "--max_predictions_per_seq",
}


def data_identity(args, train_loader):
    return {"data_dir": os.path.abspath(train_loader.index.directory), "records": len(train_loader.index),
            **{name: getattr(args, name) for name in RESUME_MUST_MATCH}}


def training_tokenizer(args, train_dir, config):
    """The vocab and lower-casing every checkpoint records: the flags, else what the data's summary.json says."""
    tokenizer = tokenizer_settings.for_run(args, tokenizer_settings.of_pretraining_data(train_dir))
    if tokenizer.vocab_file is None:
        cfg.warn(f"the data {train_dir} names no vocab.txt found here (in its summary.json): the checkpoints will "
                 "hold no vocab; pass --vocab_file to include it")
    elif len(load_vocab(tokenizer.vocab_file)) > config.vocab_size:
        raise cfg.UsageError(f"the vocab {tokenizer.vocab_file} has more tokens than the model's vocab_size "
                             f"{config.vocab_size}: pass the --vocab_file that the data was made with")
    return tokenizer


def save(args, config, model, runner, train_loader, step, mode, world, tokenizer):
    meta = {"mode": mode, "world_size": world, "optim_name": args.optim_name,
            "use_consistent": bool(args.use_consistent), "data": train_loader.state_dict(),
            "data_identity": data_identity(args, train_loader)}
    path = native.save_checkpoint(args.checkpoint_path, step, config, model_state(model), runner.state_dict(), meta,
                                  keep=args.keep_checkpoints, is_global=bool(args.use_consistent), tokenizer=tokenizer)
    log(f"saved checkpoint {path}")


def load_newest_intact(args, placement):
    """(path, meta, weights, train state) of the newest checkpoint; with --resume=auto, of the newest one that
    loads, after naming each damaged newer one."""
    found = native.list_checkpoints(args.checkpoint_path)
    if not found:
        raise native.CheckpointError(f"--resume: no complete checkpoint under {args.checkpoint_path}")
    for _, path in reversed(found):
        try:
            return (path, *native.load_checkpoint(path, is_global=placement.is_global))
        except native.CheckpointError as e:
            if args.resume != "auto":
                raise native.CheckpointError(f"{e}; --resume=auto resumes from the newest intact older checkpoint "
                                             "instead") from None
            log(f"warning: skipping a damaged checkpoint: {e}")
    raise native.CheckpointError(f"--resume=auto: no intact checkpoint under {args.checkpoint_path}")


def check_resume_matches(path, meta, args, train_loader):
    saved = meta.get("data_identity", {})
    current = data_identity(args, train_loader)
    for name, flag in RESUME_MUST_MATCH.items():
        if name in saved and saved[name] != current[name]:
            raise native.CheckpointError(f"{path}: saved with {flag} {saved[name]}, cannot resume with {current[name]}: "
                                         "the saved data position would point at other records")
    if saved and (saved["data_dir"], saved["records"]) != (current["data_dir"], current["records"]):
        raise native.CheckpointError(
            f"{path}: saved while training on {saved['data_dir']} ({saved['records']} records), cannot resume on "
            f"{current['data_dir']} ({current['records']} records) (--ofrecord_path)")


def resume(args, model, runner, train_loader, placement):
    path, meta, weights, train_state = load_newest_intact(args, placement)
    if meta["world_size"] != flow.env.get_world_size() or meta["optim_name"] != args.optim_name:
        raise native.CheckpointError(
            f"{path}: saved with world size {meta['world_size']} and {meta['optim_name']}, "
            f"cannot resume with world size {flow.env.get_world_size()} and {args.optim_name}")
    check_resume_matches(path, meta, args, train_loader)
    try:
        (model.module if hasattr(model, "module") else model).load_state_dict(weights)
        runner.load_state_dict(train_state)
    except (RuntimeError, KeyError, ValueError) as e:
        raise native.CheckpointError(f"{path}: does not fit this model and optimizer ({e})") from None
    train_loader.load_state_dict(meta["data"])
    log(f"resumed from {path} at step {meta['step']}")
    return meta["step"]
