"""Progress bars that stay readable in logs: the one place the project creates them.

On a terminal `progress_bar` is plain tqdm. When its stream is a pipe or a file (`2>&1 | tee train.log`, nohup, CI),
a redrawn bar would leave every frame in the log, joined by carriage returns; there it writes tqdm's statistics
as whole lines instead: one at the start, then at most one every LOG_INTERVAL seconds, and one at the end.
"""
import math
import sys
import time

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between two progress lines in a log

# Prints a line without breaking a terminal bar (it is erased and redrawn around the line).
write = tqdm.write


class LogLines(tqdm):
    """tqdm writing its statistics (no bar) as a new line, at most every `interval` seconds, instead of redrawing."""

    monitor_interval = 0  # no monitor thread: lines are written from update(), refresh() and close() only

    def __init__(self, *args, interval=LOG_INTERVAL, **kwargs):
        self.interval = interval
        self.last_line = -math.inf  # set before tqdm's __init__, which displays the first line
        super().__init__(*args, **{**kwargs, "ncols": 0, "dynamic_ncols": False})  # ncols 0: statistics only

    def display(self, msg=None, pos=None):
        """tqdm calls this on every refresh; msg "" means erase the bar, which a log line never needs."""
        if msg is None and time.monotonic() - self.last_line >= self.interval:
            self.write_line()
            return True
        return False

    def write_line(self):
        self.fp.write(str(self) + "\n")
        self.fp.flush()
        self.last_line = time.monotonic()

    def clear(self, nolock=False):
        """Nothing to erase: lines are never redrawn."""

    def close(self):
        if not self.disable:  # tqdm sets disable once closed: the final line is written once
            self.write_line()
        self.leave = False  # tqdm's own close would redraw the bar and end it with a newline
        super().close()


def progress_bar(iterable=None, file=None, **kwargs):
    """tqdm(iterable, **kwargs) on a terminal; LogLines when the stream (stderr unless file is given) is not one."""
    stream = file or sys.stderr
    bar = tqdm if stream.isatty() else LogLines
    return bar(iterable, file=stream, **kwargs)
