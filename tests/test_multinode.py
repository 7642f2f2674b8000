"""Two-node training on one machine: two oneflow.distributed.launch processes with --nnodes 2.

OneFlow 0.9 groups ranks into nodes by the IP address each process reaches the master from (the peer
address its bootstrap server sees) and gives each process the slot LOCAL_RANK on its node. So two
emulated nodes must reach the master from different addresses. The test creates its own network
namespace joined to the root namespace by a veth pair with private addresses: node 0 runs in the root
namespace, node 1 inside the namespace, both with --master_addr set to the root side of the veth. No
traffic leaves loopback and that veth pair. With the same address for both nodes, OneFlow sees one node
whose two processes both claim LOCAL_RANK 0 (see docs/distributed.md).
"""
import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from runs import PYTHON, ROOT, TINY_MODEL, losses, run
from synthetic import write_synthetic_dataset

EMULATION_NET = ipaddress.ip_network("10.231.0.0/16")  # private range; each test run takes one /30 of it
PROXY_VARS = ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
NODE_PROBE = """
import json
import oneflow as flow
x = flow.tensor([float(flow.env.get_rank() + 1)])
flow.comm.all_reduce(x)
print(json.dumps({"rank": flow.env.get_rank(), "local_rank": flow.env.get_local_rank(),
                  "node_size": flow.env.get_node_size(), "all_reduce_sum": x.item()}), flush=True)
"""


def ip_command():
    """Path of iproute2's `ip` (often in /usr/sbin, outside a user's PATH), or None."""
    return shutil.which("ip", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def ip(*args):
    return subprocess.run([ip_command(), *args], capture_output=True, text=True, timeout=10)


def emulation_subnet():
    """A /30 of EMULATION_NET chosen by pid, so concurrent test runs do not share addresses."""
    subnets = list(EMULATION_NET.subnets(new_prefix=30))
    return subnets[os.getpid() % len(subnets)]


@contextlib.contextmanager
def node1_namespace():
    """Creates netns bert-node1-<pid> and a veth pair; yields (namespace, host-side address); removes both after.

    Skips the test when namespaces cannot be created (not root, no iproute2, no netns support).
    """
    if os.geteuid() != 0:
        pytest.skip("emulating a second node needs a network namespace, and creating one needs root")
    if ip_command() is None:
        pytest.skip("emulating a second node needs a network namespace: iproute2's `ip` was not found")
    pid = os.getpid()
    namespace, host_link, ns_link = f"bert-node1-{pid}", f"bn{pid}h", f"bn{pid}n"
    host_addr, ns_addr = list(emulation_subnet().hosts())
    created = ip("netns", "add", namespace)
    if created.returncode != 0:
        pytest.skip(f"cannot create a network namespace: ip netns add: {created.stderr.strip()}")
    try:
        for step in (["link", "add", host_link, "type", "veth", "peer", "name", ns_link],
                     ["link", "set", ns_link, "netns", namespace],
                     ["addr", "add", f"{host_addr}/30", "dev", host_link],
                     ["link", "set", host_link, "up"],
                     ["-n", namespace, "addr", "add", f"{ns_addr}/30", "dev", ns_link],
                     ["-n", namespace, "link", "set", ns_link, "up"],
                     ["-n", namespace, "link", "set", "lo", "up"]):
            done = ip(*step)
            assert done.returncode == 0, f"ip {' '.join(step)}: {done.stderr.strip()}"
        yield namespace, str(host_addr)
    finally:
        ip("link", "del", host_link)  # removes its peer too
        ip("netns", "del", namespace)
        assert ip("netns", "pids", namespace).returncode != 0, f"network namespace {namespace} still exists"


def free_port_on(address):
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_synthetic_dataset(str(tmp_path_factory.mktemp("synthetic")), num_records=256, num_parts=2,
                                   val_records=64)


def train_args(data_dir, out_dir, batch, extra=()):
    return [*TINY_MODEL, "--ofrecord_path", data_dir, "--train-batch-size", str(batch), "--train_steps", "10",
            "--lr", "1e-3", "--warmup_proportion", "0.2", "--loss_print_every_n_iters", "1",
            "--val_print_every_n_iters", "0", "--checkpoint_path", os.path.join(out_dir, "ckpt"),
            "--metrics_file", os.path.join(out_dir, "metrics.jsonl"), *extra]


@pytest.fixture(scope="module")
def single_process_losses(data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("single"))
    run("run_eager_pretraining.py", train_args(data_dir, out, batch=8))
    return losses(os.path.join(out, "metrics.jsonl"))


def launch_two_nodes(script_args, master_addr, workdir, timeout, namespace=None):
    """Starts node 0 and node 1 (one process each); node 1 inside `namespace` when given.

    Each launcher runs in its own session, since it killpg's its group when a rank fails. Returns
    [(returncode, seconds until it ended, stdout text, stderr text)] per node; kills both on timeout.
    """
    port = str(free_port_on(master_addr))
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS}  # gRPC would send to a proxy
    started = time.time()
    procs, logs = [], []
    try:
        for node_rank in (0, 1):
            out = open(os.path.join(workdir, f"node{node_rank}.out"), "w+")
            err = open(os.path.join(workdir, f"node{node_rank}.err"), "w+")
            logs.append((out, err))
            prefix = [ip_command(), "netns", "exec", namespace] if namespace and node_rank == 1 else []
            cmd = [*prefix, PYTHON, "-m", "oneflow.distributed.launch", "--nnodes", "2", "--node_rank",
                   str(node_rank), "--nproc_per_node", "1", "--master_addr", master_addr, "--master_port", port,
                   *script_args]
            # cwd: the launcher points GLOG_log_dir at ./log, keep it out of the repo.
            procs.append(subprocess.Popen(cmd, cwd=workdir, stdout=out, stderr=err, env=env,
                                          start_new_session=True))
        ended = [None, None]
        while None in ended and time.time() - started < timeout:
            for i, proc in enumerate(procs):
                if ended[i] is None and proc.poll() is not None:
                    ended[i] = time.time() - started
            time.sleep(0.5)
        results = []
        for (out, err), proc, seconds in zip(logs, procs, ended):
            out.seek(0)
            err.seek(0)
            results.append((proc.returncode, seconds, out.read(), err.read()))
        return results
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for out, err in logs:
            out.close()
            err.close()


def assert_all_exited_0(results):
    for node_rank, (returncode, seconds, _, stderr) in enumerate(results):
        assert returncode == 0, f"node {node_rank} exited {returncode} after {seconds}s\n{stderr[-3000:]}"


def test_oneflow_sees_two_nodes_when_node1_runs_in_its_own_namespace(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(NODE_PROBE)
    with node1_namespace() as (namespace, master_addr):
        results = launch_two_nodes([str(probe)], master_addr, str(tmp_path), timeout=60, namespace=namespace)
    assert_all_exited_0(results)
    reports = [json.loads(stdout.strip().splitlines()[-1]) for _, _, stdout, _ in results]
    assert reports == [{"rank": r, "local_rank": 0, "node_size": 2, "all_reduce_sum": 3.0} for r in (0, 1)]


@pytest.mark.parametrize("script,extra", [
    ("run_eager_pretraining.py", ["--use_ddp"]),
    ("run_pretraining.py", ["--use_consistent"]),
], ids=["eager_ddp", "graph_global"])
def test_two_emulated_nodes_match_a_single_process(data_dir, single_process_losses, tmp_path, script, extra):
    args = [os.path.join(ROOT, script), *train_args(data_dir, str(tmp_path), batch=4, extra=extra)]
    with node1_namespace() as (namespace, master_addr):
        results = launch_two_nodes(args, master_addr, str(tmp_path), timeout=150, namespace=namespace)
    assert_all_exited_0(results)
    two_nodes = losses(str(tmp_path / "metrics.jsonl"))
    assert len(two_nodes) == 10
    np.testing.assert_allclose(two_nodes, single_process_losses, rtol=1e-4)


def test_two_nodes_on_one_address_stop_quickly_with_a_clear_message(data_dir, tmp_path):
    """utils/trainer.check_node_layout stops the launch; without it the eager run aborts in
    cpu_all_reduce.cpp:47 (value_not_found_error) and a graph run hangs."""
    args = [os.path.join(ROOT, "run_eager_pretraining.py"),
            *train_args(data_dir, str(tmp_path), batch=4, extra=["--use_ddp"])]
    results = launch_two_nodes(args, "127.0.0.1", str(tmp_path), timeout=60)
    for node_rank, (returncode, seconds, _, _) in enumerate(results):
        assert seconds is not None, f"node {node_rank} still running after 60 s"
        assert returncode != 0, f"node {node_rank} exited 0"
    node1_stderr = results[1][3]
    assert "OneFlow groups processes into nodes by IP address" in node1_stderr, node1_stderr[-3000:]
