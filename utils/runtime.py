"""The runtime every script shares: what a step computes (`Task`), where tensors live (`Placement`), how a step
runs in eager mode or inside nn.Graph (`EagerRunner`, `GraphRunner`, `build_runner`), model construction
(`build_bert`, `distribute`) and process set-up (distributed checks, the peer watchdog, the non-finite loss stop).

Eager and graph differ only in how a Task's step is run: `EagerRunner` calls it per micro-batch and steps the
optimizer itself, `GraphRunner` calls it inside nn.Graph.build and lets the graph accumulate, clip and step.
"""
import contextlib
import os
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import oneflow as flow

from modeling import offset_dropout_seeds, restart_dropout_streams
from utils import config as cfg
from utils import progress
from utils import watchdog
from utils.errors import BertError


@dataclass(frozen=True)
class Task:
    """What a step computes, for any fine-tuning or pre-training objective.

    train_outputs(model, inputs) -> tuple whose first `num_losses` entries are losses (averaged over
    micro-batches; the first is optimized) and the rest are counts (summed). eval_outputs(model, inputs)
    -> tuple of tensors. Inputs are the batch's tensors in field order. An inference-only task has no train part.
    """

    eval_fields: tuple
    eval_outputs: Callable
    train_fields: tuple = ()
    train_outputs: Optional[Callable] = None
    num_losses: int = 0


class Placement:
    """Turns numpy batches into the tensors a mode needs: local on a device, or global split(0)."""

    def __init__(self, device, is_global):
        self.device = device
        self.is_global = is_global
        # The flow.placement of global tensors: every rank of the launch.
        self.ranks = flow.placement(device, ranks=list(range(flow.env.get_world_size()))) if is_global else None

    def tensor(self, array):
        local = flow.tensor(array, device="cpu" if self.is_global else self.device)
        if self.is_global:
            return local.to_global(placement=self.ranks, sbp=flow.sbp.split(0))
        return local

    def to_host(self, tensor, reduce_ranks):
        """A scalar or vector output -> numpy; summed over ranks for local tensors when reduce_ranks."""
        if self.is_global:
            return tensor.to_global(sbp=flow.sbp.broadcast).to_local().numpy()
        if reduce_ranks and flow.env.get_world_size() > 1:
            tensor = tensor.clone()
            flow.comm.all_reduce(tensor)
        return tensor.numpy()


class EagerRunner:
    def __init__(self, task, model, optimizer, lr_scheduler, micro_batches, placement):
        self.task = task
        self.model, self.optimizer, self.lr_scheduler = model, optimizer, lr_scheduler
        self.micro_batches = micro_batches
        self.placement = placement

    def train_step(self, batch):
        self.model.train()
        outputs = None
        for chunk in range(self.micro_batches):
            inputs = [self.placement.tensor(np.array_split(batch[f], self.micro_batches)[chunk])
                      for f in self.task.train_fields]
            step = self.task.train_outputs(self.model, inputs)
            (step[0] / self.micro_batches).backward()
            step = [t.detach() for t in step]
            outputs = step if outputs is None else [a + b for a, b in zip(outputs, step)]
        # The graph clips per parameter group; eager applies the same group clip only when asked to.
        self.optimizer.clip_grad()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.lr_scheduler.step()
        return average_losses(outputs, self.task.num_losses, self.micro_batches)

    def eval_step(self, batch):
        self.model.eval()
        with flow.no_grad():
            return self.task.eval_outputs(self.model, [self.placement.tensor(batch[f]) for f in self.task.eval_fields])

    def restart_random_streams(self, segment):
        restart_dropout_streams(self.model, segment)

    def state_dict(self):
        return {"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict()}

    def load_state_dict(self, state):
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])


def average_losses(outputs, num_losses, micro_batches):
    """Losses are averaged over micro-batches, counts summed."""
    return [o / micro_batches if i < num_losses else o for i, o in enumerate(outputs)]


class TrainGraph(flow.nn.Graph):
    def __init__(self, task, model, optimizer, lr_scheduler, micro_batches, use_fp16):
        super().__init__()
        self.task = task
        self.model = model
        self.add_optimizer(optimizer, lr_sch=lr_scheduler)
        if micro_batches > 1:
            self.config.set_gradient_accumulation_steps(micro_batches)
        if use_fp16:
            self.config.enable_amp(True)
            self.set_grad_scaler(flow.amp.GradScaler(init_scale=2 ** 30, growth_factor=2.0, backoff_factor=0.5,
                                                     growth_interval=2000))

    def build(self, *inputs):
        outputs = self.task.train_outputs(self.model, inputs)
        outputs[0].backward()
        return outputs


class EvalGraph(flow.nn.Graph):
    def __init__(self, task, model, use_fp16):
        super().__init__()
        self.task = task
        self.model = model
        if use_fp16:
            self.config.enable_amp(True)

    def build(self, *inputs):
        return self.task.eval_outputs(self.model, inputs)


class GraphRunner:
    def __init__(self, task, model, optimizer, lr_scheduler, micro_batches, placement, use_fp16):
        self.task = task
        self.model = model
        self.optimizer, self.lr_scheduler = optimizer, lr_scheduler
        self.micro_batches = micro_batches
        self.placement = placement
        self.use_fp16 = use_fp16
        self.train_graph = self._new_train_graph() if optimizer else None
        self.train_graph_compiled = False
        self.eval_graph = None

    def _new_train_graph(self):
        return TrainGraph(self.task, self.model, self.optimizer, self.lr_scheduler, self.micro_batches, self.use_fp16)

    def train_step(self, batch):
        self.model.train()
        self.train_graph_compiled = True
        outputs = self.train_graph(*[self.placement.tensor(batch[f]) for f in self.task.train_fields])
        # Under accumulation the graph returns one value per micro-batch.
        outputs = [o.sum() for o in outputs] if self.micro_batches > 1 else list(outputs)
        return average_losses(outputs, self.task.num_losses, self.micro_batches)

    def eval_step(self, batch):
        self.model.eval()
        if self.eval_graph is None:  # built on first use: compiling costs time and memory
            self.eval_graph = EvalGraph(self.task, self.model, self.use_fp16)
        return self.eval_graph(*[self.placement.tensor(batch[f]) for f in self.task.eval_fields])

    def restart_random_streams(self, segment):
        """A compiled graph keeps its random streams, so it is rebuilt (from its own state) after the reseed."""
        restart_dropout_streams(self.model, segment)
        if self.train_graph_compiled:
            state = self.train_graph.state_dict()
            for param in self.model.parameters():
                param.grad = None  # the old graph's build left lazy gradients that a new build can't accumulate into
            self.train_graph = self._new_train_graph()
            self.train_graph.load_state_dict(state)
            self.train_graph_compiled = False

    def state_dict(self):
        return self.train_graph.state_dict()

    def load_state_dict(self, state):
        self.train_graph.load_state_dict(state)


def build_runner(mode, task, model, placement, optimizer=None, lr_scheduler=None, micro_batches=1, use_fp16=False):
    """The single place where eager and graph execution part ways; without an optimizer it only evaluates."""
    if mode == "graph":
        return GraphRunner(task, model, optimizer, lr_scheduler, micro_batches, placement, use_fp16)
    return EagerRunner(task, model, optimizer, lr_scheduler, micro_batches, placement)


def check_distributed(args, mode):
    """Distributed combinations OneFlow 0.9 cannot run correctly are errors, not hangs."""
    world = flow.env.get_world_size()
    if args.use_ddp and args.use_consistent:
        raise cfg.UsageError("--use_ddp and --use_consistent are two different data-parallel modes: pick one")
    if mode == "graph" and args.use_ddp:
        raise cfg.UsageError("--use_ddp is eager DistributedDataParallel: use run_eager_pretraining.py, "
                             "or --use_consistent for graph data parallel")
    if mode == "graph" and world > 1 and not args.use_consistent:
        raise cfg.UsageError(
            f"graph mode with {world} processes needs --use_consistent: a local nn.Graph under a multi-process "
            "launch hangs or trains wrongly in OneFlow 0.9 (use --use_consistent, or eager --use_ddp)")
    if mode == "eager" and world > 1 and not (args.use_ddp or args.use_consistent):
        raise cfg.UsageError(f"{world} processes were launched but neither --use_ddp nor --use_consistent was given: "
                             "every rank would train its own model")
    check_node_layout()


def check_node_layout():
    """Stops a launch whose node layout OneFlow and the launcher see differently, before its first collective.

    OneFlow 0.9 groups ranks into nodes by the IP address each process reaches the master from, and takes a
    process's slot on its node from the launcher's LOCAL_RANK. Two launchers (--nnodes 2) on one machine that
    both reach the master from the same address form ONE OneFlow node with two LOCAL_RANK 0 processes: the
    first all-reduce aborts (cpu_all_reduce.cpp:47 value_not_found_error) or global tensors hang.
    Only the ranks above the first node can see the clash; they exit at once with os._exit, because a normal
    exit waits in OneFlow's shutdown for the peers that are stuck. Rank 0 then aborts with "Machine N lost".
    """
    world, rank = flow.env.get_world_size(), flow.env.get_rank()
    per_node = world // flow.env.get_node_size()
    local_rank = flow.env.get_local_rank()
    if local_rank != rank % per_node:
        print(f"error: rank {rank} has LOCAL_RANK {local_rank}, but OneFlow groups processes into nodes by IP address "
              f"and sees {flow.env.get_node_size()} node(s) of {per_node} processes, i.e. local rank {rank % per_node}: "
              "each node of a --nnodes launch must reach --master_addr from its own IP address (one machine or "
              "network namespace per node; see docs/distributed.md)",
              file=sys.stderr, flush=True)
        os._exit(2)


class NonFiniteLoss(BertError):
    """The training loss became NaN or infinite; raised before the model of that step can be saved."""


def check_finite_loss(loss, step, placement, checkpoint_note):
    """Stops the run at the step whose loss is not finite (summed over ranks, so every rank stops together).

    Returns the host value: the loss summed over ranks.
    """
    value = float(placement.to_host(loss, reduce_ranks=True))
    if not np.isfinite(value):
        raise NonFiniteLoss(f"the training loss is {value} at step {step}: training stopped before saving this "
                            f"model; {checkpoint_note} (try a lower --lr or --learning_rate, or check the data)")
    return value


def log(message):
    if flow.env.get_rank() == 0:
        progress.write(message, file=sys.stdout)
        sys.stdout.flush()


def build_bert(args, model_class, path=None, init_format=None):
    """A local model of model_class, shaped by the flags or by a checkpoint's config and weights.

    path and init_format default to --model_load_dir / --init_format. Returns (config, model, load report or
    None without a checkpoint); the report lists newly initialized parameters such as a new task head.
    """
    path = path or args.model_load_dir
    if not path:
        config = cfg.resolve_bert_config(args)
        return config, model_class(config), None
    from utils.checkpoints.loading import load_into, read_checkpoint, resolve_format

    fmt = resolve_format(path, init_format or args.init_format)
    checkpoint = read_checkpoint(path, fmt)
    config = cfg.resolve_bert_config(args, checkpoint[0])
    model = model_class(config)
    return config, model, load_into(model, checkpoint, path, fmt)


def distribute(model, placement, use_ddp=False):
    """Moves a local model to the run's device and wraps it for DDP, or makes it global for a global placement."""
    model.to(placement.device)
    if use_ddp:
        from oneflow.nn.parallel import DistributedDataParallel

        offset_dropout_seeds(model, flow.env.get_rank())
        model = DistributedDataParallel(model)
    if placement.is_global:
        model.to_global(placement=placement.ranks, sbp=flow.sbp.broadcast)
    return model


@contextlib.contextmanager
def watching_peers(args):
    """utils/watchdog.py watches the other ranks of this node while a multi-process run trains."""
    world = flow.env.get_world_size()
    if world == 1:
        yield
        return
    per_node = world // flow.env.get_node_size()
    rank = flow.env.get_rank()
    first = rank // per_node * per_node
    watcher = watchdog.start(rank, range(first, first + per_node), args.peer_timeout)
    try:
        yield
    finally:
        watchdog.stop(watcher, rank)
