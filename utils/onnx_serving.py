"""ONNX Runtime inference for `run_infer.py --onnx MODEL.onnx` (a model written by utils/export_onnx.py).

run_infer.py tokenizes, packs and post-processes exactly as on its OneFlow path; only the forward pass runs
here. The model file says which task it was exported for and its max_position_embeddings / vocab_size
(metadata written by the export); its vocab.txt is looked for beside it unless --vocab_file is given.
Needs the ONNX extra: bash scripts/setup_env.sh --onnx.
"""
import os
import sys
import time

from utils.config import UsageError
from utils.task_flags import default_vocab_file

EXTRA = "install the ONNX extra: bash scripts/setup_env.sh --onnx"
CHECKPOINT_FLAGS = ("model_path", "hf_model_dir", "model_load_dir")


def open_session(path, threads=0):
    """An ONNX Runtime CPU session (threads=0: its default); a missing or unreadable file is a UsageError."""
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(f"--onnx needs onnxruntime: {EXTRA}") from None
    if not os.path.isfile(path):
        raise UsageError(f"--onnx {path}: no such file")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: its warnings about unused initializers are noise here
    try:
        return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidProtobuf, InvalidGraph...)
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--onnx {path}: ONNX Runtime can't load it as a model: {reason}") from None


def feeds(session, batch):
    """The batch's arrays the session takes, by input name (an NSP model also reads masked_lm_positions)."""
    return {i.name: batch[i.name] for i in session.get_inputs()}


class SessionTimer:
    """run_infer.py's Timer for a session: batch dict -> output arrays, with the time spent in run()."""

    def __init__(self, session):
        self.session = session
        self.names = [o.name for o in session.get_outputs()]
        self.calls, self.seconds = 0, 0.0

    def __call__(self, batch):
        start = time.time()
        outputs = self.session.run(self.names, feeds(self.session, batch))
        self.seconds += time.time() - start
        self.calls += 1
        return outputs

    def summary(self):
        return [f"inference time: {self.seconds:.3f} s ({self.calls} batch{'es' if self.calls != 1 else ''}, "
                "ONNX Runtime)"]


class ServedModel:
    """An exported model and what run_infer.py needs to know about it."""

    def __init__(self, path, session):
        metadata = session.get_modelmeta().custom_metadata_map
        missing = {"task", "max_position_embeddings", "vocab_size"} - set(metadata)
        if missing:
            raise UsageError(f"--onnx {path}: no {', '.join(sorted(missing))} in its metadata; "
                             "export it with python -m utils.export_onnx")
        self.path, self.session = path, session
        self.task = metadata["task"]
        self.max_position_embeddings = int(metadata["max_position_embeddings"])
        self.vocab_size = int(metadata["vocab_size"])

    def timer(self):
        return SessionTimer(self.session)


def open_model(args):
    """Loads --onnx and settles the flags that depend on it: --task defaults to the model's (another task is
    an error), --vocab_file to the vocab.txt beside the model. A checkpoint flag as well is an error."""
    given = [flag for flag in CHECKPOINT_FLAGS if getattr(args, flag)]
    if given:
        raise UsageError(f"--onnx and --{given[0]} both name a model: pass one")
    start = time.time()
    served = ServedModel(args.onnx, open_session(args.onnx))
    print(f"load time: {time.time() - start:.3f} s (ONNX Runtime)", file=sys.stderr, flush=True)
    task = args.task or ("features" if args.output_hidden_states else served.task)
    if task != served.task:
        raise UsageError(f"--onnx {args.onnx} was exported for --task {served.task}, not {task}")
    args.task = task
    args.vocab_file = default_vocab_file(args.vocab_file, os.path.dirname(os.path.abspath(args.onnx)))
    return served
