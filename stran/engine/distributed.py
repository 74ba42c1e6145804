"""Training on several processes with ``torch.distributed`` (data-parallel, as DDP): set-up from torchrun's
environment, the process's place in the group, synchronised batch norm, gradient averaging, and the few
collectives ``Trainer`` needs.

A process group is built from the variables ``torchrun`` sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``): NCCL with one GPU per local rank where CUDA is available, gloo on CPU.
``Trainer`` reads :func:`current` and works unchanged in one process (``SINGLE``). Batch norm is synchronised
over the group by :func:`sync_batch_norm` (torch's own ``SyncBatchNorm`` refuses CPU tensors in torch 2.13), so
the statistics of a step are those of the global batch, as in one process.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from stran.models.common import BatchNorm6d

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
LAUNCH_HINT = ("launch it with torchrun, e.g. `torchrun --nproc_per_node 2 -m stran.cli train STUDIES --out RUN "
               "--distributed` (docs/training.md, 'Training on several processes, GPUs and nodes')")


class DistributedSetupError(RuntimeError):
    """The process group cannot be built from this environment (the message says how to launch)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the training group; ``SINGLE`` is the one-process run."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str = ""
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, ``state.pt``, ``history.json`` and logs."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over the group (float64)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (every rank takes the same decision)."""
        if not self.active:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device if self.backend == "nccl" else None)
        return box[0]

    def barrier(self) -> None:
        if self.active and self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        elif self.active:
            dist.barrier()


SINGLE = Dist()
_BN_GROUP: Any = None
DEVICES = ("auto", "cpu", "cuda")


def single(device: str = "auto") -> Dist:
    """The one-process run on ``device``: ``auto`` is the first CUDA GPU when PyTorch sees one, else the CPU."""
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {DEVICES}")
    if device == "cuda" and not torch.cuda.is_available():
        raise DistributedSetupError(f"--device cuda, but this PyTorch ({torch.__version__}) sees no CUDA GPU: "
                                    "train with --device cpu, or install a CUDA build of torch on a GPU machine")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return Dist(device=torch.device("cuda", 0)) if cuda else SINGLE


def local_cores() -> int:
    """CPU cores this process may use: its affinity set, divided among torchrun's processes on this node."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    return max(1, n // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)))


def launched_by_torchrun() -> bool:
    return all(v in os.environ for v in TORCHRUN_VARS) and int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(backend: str = "auto", timeout_s: float = 3600.0) -> Dist:
    """Join the group torchrun (or ``spawn_group``) described in the environment; returns this process's place."""
    if dist.is_available() and dist.is_initialized():
        return current()
    missing = [v for v in TORCHRUN_VARS if v not in os.environ]
    if missing:
        raise DistributedSetupError(f"distributed training needs torchrun's environment ({', '.join(missing)} not "
                                    f"set); {LAUNCH_HINT}")
    if not dist.is_available():
        raise DistributedSetupError("this torch build has no torch.distributed")
    local_rank = int(os.environ["LOCAL_RANK"])
    if backend == "auto":
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise DistributedSetupError(f"NCCL needs a GPU per process: local rank {local_rank}, "
                                        f"{torch.cuda.device_count()} GPU(s) visible; start at most that many "
                                        "processes per node (--nproc_per_node), or use gloo on CPU")
        torch.cuda.set_device(local_rank)
        kwargs["device_id"] = torch.device("cuda", local_rank)
    dist.init_process_group(backend, init_method="env://", timeout=dt.timedelta(seconds=timeout_s), **kwargs)
    global _BN_GROUP
    # batch norm's collectives on a group of their own, apart from the gradients' and the decisions'
    _BN_GROUP = dist.new_group(backend=backend) if dist.get_world_size() > 1 else None
    return current()


def current() -> Dist:
    """This process's place (``SINGLE`` when no group of more than one process was built)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return SINGLE
    backend = dist.get_backend()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if backend == "nccl" else torch.device("cpu")
    return Dist(dist.get_rank(), dist.get_world_size(), local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
                backend, device)


def shutdown() -> None:
    global _BN_GROUP
    _BN_GROUP = None
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------------ synchronised batch norm

class _AllReduceSum(torch.autograd.Function):
    """Sum over the group whose backward is the sum of the gradients (every rank runs the same backward)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = tensor.clone()
        dist.all_reduce(out, group=_BN_GROUP)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        out = grad.contiguous().clone()
        dist.all_reduce(out, group=_BN_GROUP)
        return out


def _group_batch_norm(bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Batch norm of ``x`` (N, C) with the mean and variance of the whole group's N (two passes, like one process)."""
    c = x.shape[1]
    first = _AllReduceSum.apply(torch.cat([x.sum(0), x.new_full((1,), float(x.shape[0]))]))
    n = first[c].detach()
    mean = first[:c] / n
    var = _AllReduceSum.apply((x - mean).pow(2).sum(0)) / n
    if bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
            bn.running_var.mul_(1 - factor).add_(var.detach() * (n / (n - 1).clamp_min(1)), alpha=factor)
    y = (x - mean) * torch.rsqrt(var + bn.eps)
    return y * bn.weight + bn.bias if bn.affine else y


def _synced(bn: nn.Module) -> bool:
    return bn.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncBatchNorm6d(BatchNorm6d):
    """``BatchNorm6d`` with the statistics of the group's batch while training (same parameters and buffers)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not _synced(self):
            return super().forward(x)
        b, c, s, t, h, w = x.shape
        y = _group_batch_norm(self, x.permute(0, 3, 2, 4, 5, 1).reshape(-1, c))
        return y.view(b, t, s, h, w, c).permute(0, 5, 2, 1, 3, 4)


class SyncBatchNormNd(nn.modules.batchnorm._BatchNorm):
    """Any ``nn.BatchNorm1d/2d/3d`` (channels at dim 1) with the group's statistics while training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if not _synced(self):
            return super().forward(x)
        flat = x.movedim(1, -1)
        y = _group_batch_norm(self, flat.reshape(-1, x.shape[1]))
        return y.view(flat.shape).movedim(-1, 1)


_SYNC_TYPES: dict[type, type] = {}


def sync_batch_norm(model: nn.Module) -> int:
    """Make every batch norm of ``model`` use the group's statistics in training (in place, state dict unchanged);
    returns how many were switched."""
    n = 0
    for m in model.modules():
        if isinstance(m, BatchNorm6d) and not isinstance(m, SyncBatchNorm6d):
            m.__class__ = SyncBatchNorm6d
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and not isinstance(m, SyncBatchNormNd):
            kind = type(m)
            m.__class__ = _SYNC_TYPES.setdefault(kind, type(f"Sync{kind.__name__}", (SyncBatchNormNd, kind), {}))
        else:
            continue
        n += 1
    return n


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (the start of data-parallel training)."""
    for tensor in model.state_dict().values():
        dist.broadcast(tensor, src=0)


def average_gradients(params: list[nn.Parameter], ctx: Dist) -> None:
    """After each backward: every rank's gradients become the group's mean, as DDP makes them, in one all-reduce.
    A parameter that no rank's loss reached keeps no gradient, as in one process: DDP's reducer gives it zeros,
    and Adam's weight decay would then move it (the map-head networks read their maps without gradient, so with
    no pixel target the whole trunk is such a parameter)."""
    used = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=ctx.device)
    dist.all_reduce(used, op=dist.ReduceOp.MAX)
    grads = []
    for p, reached in zip(params, used.tolist(), strict=True):
        if reached:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view(g.shape))
        offset += g.numel()


# ---------------------------------------------------------------------------------- a group from one process

def _spawned(index: int, world_size: int, port: int, fn: Callable[..., Any], args: tuple, result_path: str) -> None:
    from stran.lifetime import exit_with_parent
    from stran.memory import keep_freed_memory

    exit_with_parent()
    keep_freed_memory()
    os.environ.update(RANK=str(index), LOCAL_RANK=str(index), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init()
    try:
        out = fn(*args)
        if ctx.main:
            with open(result_path, "wb") as fh:
                pickle.dump(out, fh)
    finally:
        shutdown()


def spawn_group(world_size: int, fn: Callable[..., Any], args: tuple = (), port: int | None = None) -> Any:
    """Run ``fn(*args)`` in ``world_size`` new processes on this machine forming one group (NCCL on GPUs, else
    gloo; ``MASTER_PORT`` from the environment as MONAI Label sets it, else a free port); returns rank 0's result.
    ``fn`` and ``args`` must be picklable."""
    import socket
    import tempfile

    import torch.multiprocessing as mp

    if port is None:
        port = int(os.environ.get("MASTER_PORT", "0"))
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="stran-ddp-") as tmp:
        result_path = os.path.join(tmp, "result.pkl")
        mp.spawn(_spawned, args=(world_size, port, fn, args, result_path), nprocs=world_size, join=True)
        with open(result_path, "rb") as fh:
            return pickle.load(fh)
