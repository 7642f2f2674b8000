"""Stops a multi-process run whose peer process stopped responding, instead of waiting forever.

OneFlow 0.9 has no collective timeout: when one rank is stopped (SIGSTOP, a debugger, a hung kernel), the
others wait in their next all-reduce for ever. Each rank runs a heartbeat thread that writes its pid to a file
of its own every few seconds, in a directory shared by the ranks of this node; a rank whose peer's file has
gone stale for `timeout` seconds prints which rank went silent, kills it (SIGKILL: a stopped process ignores
the launcher's SIGTERM until it is continued) and exits, and the launcher then stops the rest.
Only ranks of the same node are watched (their files are local); a silent rank on another node still hangs.
"""
import os
import signal
import sys
import tempfile
import threading
import time

EXIT_STATUS = 3
BEAT_SECONDS = 2.0


def heartbeat_dir():
    """One directory per launch: the launcher gives every rank the same master address and port."""
    launch = f"{os.environ.get('MASTER_ADDR', 'local')}-{os.environ.get('MASTER_PORT', '0')}"
    return os.path.join(tempfile.gettempdir(), f"bert-heartbeats-{launch}")


class PeerWatchdog:
    def __init__(self, rank, local_ranks, timeout):
        self.rank, self.peers, self.timeout = rank, [r for r in local_ranks if r != rank], timeout
        self.directory = heartbeat_dir()
        self.own_file = self.file_of(rank)
        self.started_at = time.time()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="peer-watchdog", daemon=True)

    def file_of(self, rank):
        return os.path.join(self.directory, f"rank_{rank}")

    def start(self):
        os.makedirs(self.directory, exist_ok=True)
        self._beat()
        self.thread.start()
        return self

    def stop(self):
        self.stopped.set()
        self.thread.join()
        try:
            os.remove(self.own_file)
        except FileNotFoundError:
            pass

    def _beat(self):
        with open(self.own_file, "w") as f:
            f.write(str(os.getpid()))

    def silent_peer(self, now):
        """(rank, seconds) of a peer whose heartbeat is older than the timeout, else None.

        A peer without a file hasn't started yet or has finished (it removes its file), and a file last touched
        before this run started was left by an earlier launch on the same port: none of them is a hang.
        """
        for peer in self.peers:
            try:
                beat = os.path.getmtime(self.file_of(peer))
            except FileNotFoundError:
                continue
            if beat >= self.started_at and now - beat > self.timeout:
                return peer, now - beat
        return None

    def _run(self):
        while not self.stopped.wait(BEAT_SECONDS):
            self._beat()
            silent = self.silent_peer(time.time())
            if silent:
                peer, age = silent
                print(f"error: rank {self.rank}: rank {peer} has not responded for {age:.0f} s (stopped or hung; "
                      f"--peer_timeout {self.timeout:g}): stopping this run", file=sys.stderr, flush=True)
                self.kill(peer)
                os._exit(EXIT_STATUS)

    def kill(self, peer):
        try:
            with open(self.file_of(peer)) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass  # it ended meanwhile
