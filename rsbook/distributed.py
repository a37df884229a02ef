"""Training on several processes with PyTorch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc_per_node=N -m rsbook train ...`` starts N copies of the command; each
learns its rank from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``). This module
holds everything :func:`rsbook.train.fit` needs to cooperate, so that the training loop
itself only asks four questions (which device, which model to call, which data loader,
am I the process that writes?):

* :func:`setup` joins the process group (NCCL on GPUs, gloo on CPUs) and picks this
  rank's device (``cuda:<LOCAL_RANK>``);
* :func:`wrap` puts the model in :class:`~torch.nn.parallel.DistributedDataParallel`, which
  averages gradients in the backward pass;
* :func:`loader` gives each rank its slice of every epoch through a
  :class:`~torch.utils.data.distributed.DistributedSampler` reseeded per epoch, with the
  global batch split evenly (``batch_size`` keeps its single-GPU meaning);
* :func:`all_sum` adds the per-rank loss/accuracy counts so the history is global;
* :func:`check_in_sync` verifies at the end that every rank holds the same weights.

Only rank 0 writes checkpoints and shows progress. A single process (no torchrun) gets a
context with ``world_size == 1`` and every function is the identity, so ``fit`` behaves
exactly as before.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

__all__ = ["Context", "setup", "wrap", "loader", "all_sum", "check_in_sync", "rank_seed", "shutdown",
           "launched_by_torchrun", "torchrun_command"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: its ``rank`` among ``world_size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group if torchrun started several processes; returns ``(context, device)``.

    On CUDA the device becomes ``cuda:<LOCAL_RANK>``. Calling it again (``fit`` called twice
    in one job) reuses the group.
    """
    if not launched_by_torchrun():
        return Context(), device
    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Context(rank, world, local), device


def wrap(model: torch.nn.Module, ctx: Context, device: torch.device) -> torch.nn.Module:
    """The module the training step calls: ``model`` itself, or a DDP wrapper around it.

    Buffers (BatchNorm statistics) are not broadcast at every forward pass: objectives that
    run extra forward passes (attacks) would otherwise need the same number on every rank.
    Each rank keeps its own running statistics and rank 0's are saved.
    """
    if not ctx.enabled:
        return model
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    with warnings.catch_warnings():  # newer torch suggests forward_sync_buffers, which still syncs at init
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def loader(data: Dataset, batch_size: int, ctx: Context, seed: int, epoch: int, **kwargs) -> DataLoader:
    """This rank's shuffled loader for ``epoch``: the global ``batch_size`` split over the ranks."""
    if not ctx.enabled:
        return DataLoader(data, batch_size=batch_size, shuffle=True,
                          generator=torch.Generator().manual_seed(seed), **kwargs)
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return DataLoader(data, batch_size=max(1, batch_size // ctx.world_size), sampler=sampler, **kwargs)


def rank_seed(seed: int, ctx: Context) -> int:
    """A different torch seed per rank (rank 0 keeps ``seed``), so ranks draw different noise."""
    return seed + 1_000_003 * ctx.rank


def all_sum(values, ctx: Context, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (the values themselves on a single process)."""
    if not ctx.enabled:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def check_in_sync(model: torch.nn.Module, ctx: Context, device: torch.device) -> None:
    """Raise if the ranks' weights differ (DDP averages gradients, so they never should)."""
    if not ctx.enabled:
        return
    with torch.no_grad():
        local = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
    gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(gathered, local)
    if not all(torch.equal(g, gathered[0]) for g in gathered):
        raise RuntimeError("distributed training left the ranks with different weights")


def barrier(ctx: Context) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (end of a torchrun job)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def torchrun_command(gpus: int, args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node=<gpus> -m rsbook <args>``."""
    import sys

    if isinstance(gpus, bool) or int(gpus) != gpus or gpus < 1:
        raise ValueError(f"gpus must be an integer >= 1, got {gpus!r}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={int(gpus)}",
            "-m", "rsbook", *args]
