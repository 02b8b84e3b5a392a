"""Training on several processes with PyTorch's own engine: ``torch.distributed`` and DDP.

A run on N devices is N copies of the same ``studio train`` started by ``torchrun`` (or by
``studio train --devices N``, which starts torchrun: :mod:`studio.training.torchrun`). Each
process learns its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); :func:`start` joins the process group (``nccl`` on GPUs, ``gloo`` on CPUs)
and the training loop asks :func:`ranks` where it stands. What changes with several processes,
and only then (one process runs exactly as before):

- each epoch's order comes from a :class:`~torch.utils.data.DistributedSampler` seeded with
  the run's seed (every process its own share, all of equal length so the steps match);
- the frozen-feature cache is computed once over all processes, each its share of the
  pictures (:func:`share_of`), then exchanged (:func:`share_rows`) so every process holds it;
- gradients are averaged by :class:`~torch.nn.parallel.DistributedDataParallel`
  (:func:`wrap`); losses, accuracies and validation are summed over processes (:func:`sum_all`);
- a stop asked in any process stops all of them after the same step (:func:`any_rank`);
- rank 0 alone writes the run folder, the events and the checkpoints.

The batch size of a run is the total over its processes (each takes its share), so a run
means the same on one device or several, and its learning rate stays right.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "Ranks",
    "ranks",
    "wanted",
    "gpu_count",
    "start",
    "finish",
    "device_for",
    "share_of",
    "epoch_order",
    "sum_all",
    "any_rank",
    "barrier",
    "broadcast",
    "share_rows",
    "check_same",
    "lost_peer",
    "wrap",
]

# Features exchanged per message: bounds the memory an exchange adds (rows x feature size).
_ROWS_PER_MESSAGE = 2048


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its rank, the number of processes, its device index."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes the run folder and prints."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.world > 1

    def share(self, total: int) -> int:
        """This process's part of a total that is split between processes (a batch size)."""
        return max(1, total // self.world) if self.many else total


def ranks() -> Ranks:
    """This process's place; a single process when no process group was started."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def wanted() -> bool:
    """True in a process torchrun started as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def gpu_count() -> int:
    """GPUs this computer can train on: the app offers a device count when there are two."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def start(device: str = "auto") -> Ranks:
    """Join the process group torchrun prepared (once); a single process is left alone.

    ``nccl`` when the processes train on GPUs, ``gloo`` on CPUs (``device`` "cpu", or none
    present)."""
    if not wanted() or not dist.is_available():
        return Ranks()
    if not dist.is_initialized():
        on_gpu = device in ("auto", "cuda") and torch.cuda.is_available()
        if on_gpu:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("nccl" if on_gpu else "gloo")
    return ranks()


def finish() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(device: torch.device, where: Ranks) -> torch.device:
    """Each process its own GPU (its local rank); CPUs are shared."""
    if where.many and device.type == "cuda":
        return torch.device("cuda", where.local)
    return device


def share_of(positions: Sequence[int], where: Ranks) -> list[int]:
    """The positions this process computes when work is split once (every ``world``-th)."""
    return list(positions[where.rank :: where.world])


def epoch_order(n: int, seed: int, where: Ranks) -> np.ndarray:
    """This process's pictures for an epoch, in order: PyTorch's DistributedSampler, shuffled
    with ``seed`` (the epoch's), padded so that every process gets as many."""
    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), where.world, where.rank, shuffle=True, seed=seed)
    return np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))


def _device() -> torch.device:
    """Where collectives run: NCCL needs CUDA tensors, gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sum_all(values: Sequence[float], where: Ranks) -> list[float]:
    """Each value summed over all processes (itself when there is one)."""
    if not where.many:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return t.cpu().tolist()


def any_rank(flag: bool, where: Ranks) -> bool:
    """True on every process when it is true on any (a stop asked in one of them)."""
    return sum_all([1.0 if flag else 0.0], where)[0] > 0 if where.many else flag


def barrier(where: Ranks) -> None:
    if where.many:
        dist.barrier()


def broadcast(value: object, where: Ranks) -> object:
    """Rank 0's ``value`` on every process (a config decided once)."""
    if not where.many:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def share_rows(store, view: int, positions: Sequence[int], where: Ranks) -> None:
    """After each process stored its :func:`share_of` ``positions`` in ``store``'s ``view``,
    give every process all of them (all-gather, a bounded number of rows at a time)."""
    if not where.many or not len(positions):
        return
    parts = [list(positions[r :: where.world]) for r in range(where.world)]
    longest = max(len(p) for p in parts)
    device = _device()
    for start in range(0, longest, _ROWS_PER_MESSAGE):
        mine = parts[where.rank][start : start + _ROWS_PER_MESSAGE]
        size = min(_ROWS_PER_MESSAGE, longest - start)
        block = torch.zeros((size, *store.shape), dtype=torch.float32)
        if mine:
            block[: len(mine)] = store.get(np.full(len(mine), view), np.asarray(mine))
        gathered = [torch.empty_like(block, device=device) for _ in range(where.world)]
        dist.all_gather(gathered, block.to(device))
        for rank, part in enumerate(parts):
            rows = part[start : start + _ROWS_PER_MESSAGE]
            if rows and rank != where.rank:
                store.put_rows(view, rows, gathered[rank][: len(rows)].cpu())


def check_same(model: nn.Module, where: Ranks) -> None:
    """Raise when the processes' copies of ``model`` differ: DDP keeps them equal step by
    step, and a run whose copies drifted apart must not save rank 0's as the result."""
    if not where.many:
        return
    with torch.no_grad():
        mine = torch.stack(
            [p.detach().double().sum() for p in model.parameters()] or [torch.zeros(())]
        ).cpu()
    copies = [torch.empty_like(mine, device=_device()) for _ in range(where.world)]
    dist.all_gather(copies, mine.to(_device()))
    if any(not torch.allclose(c.cpu(), mine, rtol=1e-6, atol=1e-7) for c in copies):
        raise RuntimeError("the training processes' models differ (their steps went apart)")


def lost_peer(error: BaseException) -> str:
    """What to tell the user when a collective failed because another process is gone (it was
    killed, or its machine went away); "" for any other error."""
    text = str(error)
    clues = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "timed out")
    if isinstance(error, getattr(dist, "DistError", ())) or any(c in text for c in clues):
        return ("another training process is gone (killed, or its machine stopped); the run "
                "keeps its finished epochs in its checkpoint: continue it with --resume")  # fmt: skip
    return ""


def wrap(module: nn.Module, where: Ranks, device: torch.device) -> nn.Module:
    """``module`` in DistributedDataParallel when there are several processes (its gradients
    averaged over them after each backward pass)."""
    if not where.many:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids)
