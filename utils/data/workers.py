"""Worker processes of the data pipeline that an error or Ctrl-C stops cleanly.

`multiprocessing.Pool.terminate()`, which leaving `with Pool(...)` calls, can wait forever when a task or a
result larger than a pipe's buffer (64 KB) is half-way through one of the pool's pipes: the reader on the other
end (a worker, or a thread of the pool) is gone and the writer holds a lock that the shutdown needs. A shard of
documents and its records are megabytes, so tasks and results go through files here and only their names
through the pipes. Ctrl-C reaches the whole process group: the workers ignore SIGINT and leave it to the main
process, which cleans up and then terminates them.
"""
import contextlib
import multiprocessing
import os
import pickle
import shutil
import signal
import tempfile


@contextlib.contextmanager
def _sigint_ignored_by_children():
    """Processes started inside ignore SIGINT from their first instruction on (a worker interrupted while it
    starts would print a traceback). SIGINT is blocked meanwhile, so one that arrives is not lost: it reaches
    the restored handler when the block ends."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _init_worker(initializer, initargs):
    # Ignored again: importing oneflow (through dataset) installs its own SIGINT handler, which ends the worker at once.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*initargs)


def _dump(obj, path):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def _load(path):
    with open(path, "rb") as f:
        obj = pickle.load(f)
    os.remove(path)
    return obj


def _call(function, path):
    """Worker side: the argument from PATH.in, the result to PATH.out."""
    _dump(function(_load(path + ".in")), path + ".out")
    return path


class FilePool:
    """A spawn Pool of `num_workers` whose arguments and results travel as files in a temp folder under `folder`
    (default: the system's); leaving the `with` block terminates the workers and removes the folder."""

    def __init__(self, num_workers, folder=None, initializer=None, initargs=()):
        self.folder = tempfile.mkdtemp(prefix="pool-", dir=folder)
        self.submitted = 0
        with _sigint_ignored_by_children():
            self.pool = multiprocessing.get_context("spawn").Pool(num_workers, initializer=_init_worker,
                                                                  initargs=(initializer, initargs))

    def submit(self, function, argument):
        """Starts function(argument); returns an AsyncResult to pass to result()."""
        path = os.path.join(self.folder, str(self.submitted))
        self.submitted += 1
        _dump(argument, path + ".in")
        return self.pool.apply_async(_call, (function, path))

    @staticmethod
    def result(pending):
        """The value of a submit(), waiting for it; a worker's exception is raised here."""
        return _load(pending.get() + ".out")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.pool.terminate()
        shutil.rmtree(self.folder, ignore_errors=True)
