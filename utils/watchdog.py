"""Stops a multi-process run whose peer process was stopped, instead of waiting for it for ever.

OneFlow 0.9 has no collective timeout: when one rank is stopped (SIGSTOP, Ctrl-Z, a debugger), the others wait
in their next all-reduce for ever. A thread can't watch for this, because a rank blocked in a collective may
hold the GIL; so each rank starts this module as a small process of its own (no oneflow import). It reads the
pids that the ranks of its node publish in a shared directory and the state of each in /proc; a peer that has
been stopped for `timeout` seconds is named and SIGKILLed (a stopped process ignores the launcher's SIGTERM until
it is continued), and the launcher then stops the rest as for any rank that died. Only ranks of the same node
are watched (their pids are local); the watcher exits when its own rank does.

    python -m utils.watchdog --rank R --ranks 0 1 --timeout SECONDS --parent PID
"""
import argparse
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import time

POLL_SECONDS = 1.0


def pid_dir():
    """One directory per launch: the launcher gives every rank the same master address and port."""
    launch = f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ.get('MASTER_PORT', '0')}"
    return os.path.join(tempfile.gettempdir(), f"bert-ranks-{launch}")


def pid_file(rank):
    return os.path.join(pid_dir(), f"rank_{rank}")


def process_state(pid):
    """The one-letter state of /proc/PID/stat (R, S, D, T for stopped, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def read_pid(rank):
    try:
        with open(pid_file(rank)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def start(rank, local_ranks, timeout):
    """Publishes this rank's pid and starts its watcher process; returns the watcher (a Popen)."""
    os.makedirs(pid_dir(), exist_ok=True)
    with open(pid_file(rank), "w") as f:
        f.write(str(os.getpid()))
    command = [sys.executable, "-m", "utils.watchdog", "--rank", str(rank), "--timeout", str(timeout),
               "--parent", str(os.getpid()), "--ranks", *map(str, local_ranks)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.Popen(command, cwd=root, start_new_session=False)


def stop(watcher, rank):
    watcher.terminate()
    watcher.wait()
    try:
        os.remove(pid_file(rank))
    except FileNotFoundError:
        pass


def watch(rank, peers, timeout, parent):
    """Polls the peers' states until the parent rank ends; acts on a peer stopped for longer than timeout."""
    stopped_since = {}
    while process_state(parent) not in (None, "Z"):
        now = time.time()
        for peer in peers:
            pid = read_pid(peer)
            if pid is None or process_state(pid) != "T":
                stopped_since.pop(peer, None)
                continue
            since = stopped_since.setdefault(peer, now)
            if now - since > timeout:
                print(f"error: rank {rank}: rank {peer} (pid {pid}) has been stopped for {now - since:.0f} s "
                      f"(--peer_timeout {timeout:g}): ending the run", file=sys.stderr, flush=True)
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(POLL_SECONDS)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rank", type=int, required=True)
    parser.add_argument("--ranks", type=int, nargs="+", required=True, help="the ranks of this node")
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--parent", type=int, required=True)
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the rank's to handle; the rank stops this process
    # Ends with its rank even when the rank is SIGKILLed (prctl PR_SET_PDEATHSIG = 1).
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)
    watch(args.rank, [r for r in args.ranks if r != args.rank], args.timeout, args.parent)


if __name__ == "__main__":
    main()
