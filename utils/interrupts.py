"""Ctrl-C and `kill` as ordinary exceptions, so every entry point cleans up and exits 130 with one line.

Without this, a signal that arrives while OneFlow runs ends the process at once (status 255): no `finally`
runs, temp files stay behind. `install()` makes SIGINT and SIGTERM raise `Interrupted` in the main thread,
and `main_guard` turns it into one line on stderr and exit status 130 (128 + SIGINT, the shell convention);
with errors_exit_with set, a BertError becomes one `error: ...` line and that exit status too.
"""
import contextlib
import signal
import sys

from utils.errors import BertError

EXIT_STATUS = 130


class Interrupted(Exception):
    """Raised in the main thread when SIGINT or SIGTERM arrives."""

    def __init__(self, signal_name):
        super().__init__(signal_name)
        self.signal_name = signal_name


def _raise_interrupted(signum, frame):
    # One interruption is enough: a second signal during cleanup must not abort the cleanup half-way.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGXFSZ)


def install():
    """Returns the previous handlers, for `main_guard` to put back when an in-process caller returns."""
    previous = {signum: signal.getsignal(signum) for signum in HANDLED}
    signal.signal(signal.SIGINT, _raise_interrupted)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    # A write past RLIMIT_FSIZE then fails with OSError EFBIG (named by the writer) instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return previous


@contextlib.contextmanager
def main_guard(program, errors_exit_with=None):
    """Runs an entry point's body: an interruption prints `program: interrupted by SIGINT ...` and exits 130;
    with errors_exit_with, a BertError prints `error: MESSAGE` and exits with that status."""
    previous = install()
    try:
        yield
    except BertError as e:
        if errors_exit_with is None:
            raise
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.exit(errors_exit_with)
    except Interrupted as e:
        print(f"{program}: interrupted by {e.signal_name}; partial outputs were removed", file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
