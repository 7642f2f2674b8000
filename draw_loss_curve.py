"""Plot BERT pre-training curves from training logs, and the difference between two runs.

The seed's "align different train modes" tool: give it the logs of, say, an eager and a graph run and it draws
total / MLM / NSP loss and accuracy (pred_acc = NSP accuracy, mlm_acc) against step, plus a panel of
run B minus run A on the steps both logged, which should stay at zero when two modes agree.

Inputs, any mix of:
  - a log in the seed's line format (stdout of run_pretraining.py / run_eager_pretraining.py, parsed by
    utils.metrics.parse_line; validation lines are drawn as markers);
  - a --metrics_file (JSON lines, full precision: use these when the difference panel must resolve < 1e-3);
  - a launcher log directory (`--redirect_stdout_and_stderr --logdir DIR`): every DIR/local_rank_N/stdout that
    holds training lines becomes a curve.
A step logged twice (a resumed run appended to the same log) keeps its last value.

  python draw_loss_curve.py eager.log graph.log --out compare.png
  python draw_loss_curve.py log/ --labels ddp --out ddp.png
"""
import glob
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot is imported)

from utils.metrics import parse_log  # noqa: E402
from utils import interrupts  # noqa: E402
from utils.cli import argument_parser  # noqa: E402
from utils.errors import BertError  # noqa: E402

LOSS_PANELS = ("total_loss", "mlm_loss", "nsp_loss")
# Accuracy names per line kind: training lines call NSP accuracy pred_acc (the seed's name), validation nsp_acc.
ACCURACIES = {"train": (("pred_acc", "NSP"), ("mlm_acc", "MLM")), "val": (("nsp_acc", "NSP"), ("mlm_acc", "MLM"))}


class LogError(BertError, ValueError):
    """A log that cannot be drawn: missing, or without training lines."""


def read_metrics_file(path):
    """A --metrics_file (one JSON object per line, "kind" = train | val) -> {"train": [...], "val": [...]}."""
    parsed = {"train": [], "val": []}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise LogError(f"{path}:{number}: not a JSON metrics line ({e})") from None
            kind = row.pop("kind", "train")
            if kind in parsed:
                parsed[kind].append(row)
    return parsed


def is_metrics_file(path):
    with open(path, errors="replace") as f:
        for line in f:
            if line.strip():
                return line.lstrip().startswith("{")
    return False


def by_step(rows):
    """Rows -> rows sorted by step, keeping the last row of a step logged twice (a resumed run)."""
    return [row for _, row in sorted({row["step"]: row for row in rows}.items())]


def load_run(path):
    """One log or metrics file -> {"train": rows, "val": rows}, rows sorted by step."""
    if not os.path.isfile(path):
        raise LogError(f"{path}: no such log file")
    parsed = read_metrics_file(path) if is_metrics_file(path) else parse_log(path)
    # A run killed mid-write can leave a truncated last line: keep only complete training rows.
    parsed["train"] = [row for row in parsed["train"] if all(name in row for name in LOSS_PANELS)]
    if not parsed["train"]:
        raise LogError(f"{path}: no training lines (expected lines like 'step: 0, total_loss: ...' or a "
                       "--metrics_file): was the run printing with --loss_print_every_n_iters?")
    return {"train": by_step(parsed["train"]), "val": by_step(parsed["val"])}


def expand_paths(paths):
    """Files stay as given; a launcher log directory becomes its local_rank_N/stdout files that hold training lines."""
    files = []
    for path in paths:
        if not os.path.isdir(path):
            files.append(path)
            continue
        rank_logs = sorted(glob.glob(os.path.join(path, "local_rank_*", "stdout")),
                           key=lambda p: int(os.path.basename(os.path.dirname(p)).split("_")[-1]))
        with_lines = [p for p in rank_logs if parse_log(p)["train"]]
        if not with_lines:
            raise LogError(f"{path}: a directory without local_rank_N/stdout training logs "
                           "(the launcher writes them with --redirect_stdout_and_stderr --logdir DIR)")
        files.extend(with_lines)
    return files


def is_rank_log(path):
    """The launcher's per-rank stdout: LOGDIR/local_rank_N/stdout."""
    return os.path.basename(path) == "stdout" and os.path.basename(os.path.dirname(path)).startswith("local_rank_")


def default_labels(paths):
    """The shortest path suffixes that tell the files apart (eager.log, graph.log), at least LOGDIR/local_rank_N/stdout
    for a launcher's per-rank log."""
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-max(depth, 3 if is_rank_log(path) else 1):]) for p, path in zip(parts, paths)]
        if len(set(labels)) == len(labels):
            return labels
    return [os.path.normpath(p) for p in paths]


def difference(run_a, run_b):
    """Run B minus run A for each loss on the training steps both logged."""
    a = {row["step"]: row for row in run_a["train"]}
    b = {row["step"]: row for row in run_b["train"]}
    steps = sorted(set(a) & set(b))
    return {"steps": steps, **{name: [b[s][name] - a[s][name] for s in steps] for name in LOSS_PANELS}}


def plot_run(axes, run, label):
    """One run in its own colour: lines for training points, markers for validation points."""
    train, val = run["train"], run["val"]
    steps = [row["step"] for row in train]
    color = None
    for name in LOSS_PANELS:
        line, = axes[name].plot(steps, [row[name] for row in train], color=color, label=label)
        color = line.get_color()
        val_rows = [row for row in val if name in row]
        if val_rows:
            axes[name].plot([row["step"] for row in val_rows], [row[name] for row in val_rows], "o",
                            color=color, label=f"{label} val")
    for kind, rows in (("train", train), ("val", val)):
        for (key, what), style in zip(ACCURACIES[kind], ("-", "--") if kind == "train" else ("o", "s")):
            points = [(row["step"], row[key]) for row in rows if key in row]
            if points:
                suffix = "" if kind == "train" else " val"
                axes["accuracy"].plot(*zip(*points), style, color=color, label=f"{label} {what} acc{suffix}")


def draw(log_paths, out_png, labels=None):
    """Draws the logs into out_png and returns what was drawn.

    Returns {"out_png", "runs": [{"label", "path", "steps", "val_steps"}], "curves": {panel: [curve labels]},
    "difference": {"steps", "total_loss", "mlm_loss", "nsp_loss"} (run 2 minus run 1) or None}.
    """
    paths = expand_paths(list(log_paths))
    if labels is not None and len(labels) != len(paths):
        raise LogError(f"--labels gives {len(labels)} names for {len(paths)} logs ({', '.join(paths)})")
    labels = list(labels) if labels is not None else default_labels(paths)
    runs = [load_run(p) for p in paths]
    diff = difference(runs[0], runs[1]) if len(runs) == 2 else None
    if diff is not None and not diff["steps"]:
        raise LogError(f"{paths[0]} and {paths[1]} share no logged step: nothing to compare")

    rows = 3 if diff else 2
    fig = plt.figure(figsize=(13, 4 * rows))
    grid = fig.add_gridspec(rows, 2)
    axes = {name: fig.add_subplot(grid[i // 2, i % 2]) for i, name in enumerate(LOSS_PANELS + ("accuracy",))}
    for run, label in zip(runs, labels):
        plot_run(axes, run, label)
    if diff:
        axes["difference"] = fig.add_subplot(grid[2, :])
        for name in LOSS_PANELS:
            axes["difference"].plot(diff["steps"], diff[name], marker=".", label=name)
        axes["difference"].axhline(0.0, color="gray", linewidth=0.8)
        axes["difference"].set_title(f"{labels[1]} minus {labels[0]}")
    for name, ax in axes.items():
        ax.set_xlabel("step")
        if name != "difference":
            ax.set_title(name.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    curves = {name: [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]
              for name, ax in axes.items()}
    return {
        "out_png": out_png,
        "runs": [{"label": label, "path": path, "steps": [r["step"] for r in run["train"]],
                  "val_steps": [r["step"] for r in run["val"]]} for path, label, run in zip(paths, labels, runs)],
        "curves": curves,
        "difference": diff,
    }


def main(argv=None):
    with interrupts.main_guard("draw_loss_curve.py"):
        parser = argument_parser("Plot loss/accuracy curves of BERT pre-training logs; with two logs, also their "
                                 "difference (run 2 minus run 1).")
        parser.add_argument("logs", nargs="+", help="training logs (seed line format), --metrics_file JSON lines, "
                                                    "or launcher log directories (local_rank_N/stdout)")
        parser.add_argument("--out", default="loss_curve.png", help="output PNG (default: loss_curve.png)")
        parser.add_argument("--labels", nargs="+", help="one curve name per log (default: the file names)")
        args = parser.parse_args(argv)
        try:
            drawn = draw(args.logs, args.out, args.labels)
        except (BertError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        for run in drawn["runs"]:
            print(f"{run['label']}: {len(run['steps'])} training points, steps {run['steps'][0]}..{run['steps'][-1]}")
        if drawn["difference"]:
            worst = max(abs(v) for name in LOSS_PANELS for v in drawn["difference"][name])
            print(f"largest |difference| over {len(drawn['difference']['steps'])} common steps: {worst:.6g}")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
