"""The seed's log-line format, written and parsed here only.

Training line (rank 0; step is 0-based, throughput is samples/s since the previous line):
  step: 19, total_loss: 11.138, mlm_loss: 10.422, nsp_loss: 0.716, pred_acc: 0.503, mlm_acc: 0.041, throughput: 81.638, epoch: 0 1632812345.12
pred_acc keeps the seed's meaning (NSP accuracy); mlm_acc is appended after it.
Validation line (the seed's first part, then named values):
  Epoch 0, val iter 99, total accuracy 50.31, mlm_acc: 0.041, nsp_acc: 0.503, mlm_loss: 9.1, nsp_loss: 0.69
"""
import re
import time

VAL_RE = re.compile(r"^Epoch (\d+), val iter (\d+), total accuracy ([0-9.]+)(.*)$")
PAIR_RE = re.compile(r"([A-Za-z_]+): (-?[0-9.]+(?:e[-+]?\d+)?|nan|inf)")


def _format_value(value):
    return f"{value}" if isinstance(value, int) else f"{value:.3f}"


class StepWindow:
    """Sums per-step values between two log lines, with the number of steps and the seconds they took.

    Values are summed as given: floats on the host, or tensors that stay on their device until a line is printed.
    """

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums, self.steps, self.start = None, 0, time.time()

    def add(self, values):
        self.sums = list(values) if self.sums is None else [a + b for a, b in zip(self.sums, values)]
        self.steps += 1

    def take(self):
        """(sums, steps, seconds) of the window so far; a new window starts."""
        taken = self.sums, self.steps, max(time.time() - self.start, 1e-9)
        self.reset()
        return taken


def format_train_line(values, timestamp=None):
    """values: ordered dict name -> int or float (step first)."""
    body = ", ".join(f"{k}: {_format_value(v)}" for k, v in values.items())
    return f"{body} {time.time() if timestamp is None else timestamp}"


def format_val_line(epoch, val_iter, values):
    total = 100.0 * values["nsp_acc"]
    extra = "".join(f", {k}: {_format_value(v)}" for k, v in values.items())
    return f"Epoch {epoch}, val iter {val_iter}, total accuracy {total:.2f}{extra}"


def parse_line(line):
    """One log line -> ("train" | "val", dict) or None for any other line."""
    line = line.strip()
    m = VAL_RE.match(line)
    if m:
        values = {"epoch": int(m.group(1)), "step": int(m.group(2)), "total_accuracy": float(m.group(3))}
        values.update({k: float(v) for k, v in PAIR_RE.findall(m.group(4))})
        return "val", values
    if not line.startswith("step: "):
        return None
    pairs = PAIR_RE.findall(line)
    values = {k: (int(v) if k in ("step", "epoch") else float(v)) for k, v in pairs}
    return "train", values


def parse_log(path):
    """A log file -> {"train": [dict...], "val": [dict...]} in file order."""
    parsed = {"train": [], "val": []}
    with open(path, errors="replace") as f:
        for line in f:
            result = parse_line(line)
            if result:
                parsed[result[0]].append(result[1])
    return parsed
