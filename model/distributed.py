"""Data parallelism: one process per GPU under `torchrun`, gradients averaged by DDP.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE (and MASTER_ADDR/PORT); without them this is a
single process and nothing is initialised, so the same trainer runs alone or distributed.
"""

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Placement:
    """Where this process stands: its rank among world_size processes, and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_from_env(device_type: str | None = None, devices_per_rank: int = 1) -> Placement:
    """Read torchrun's environment, pick this rank's device and join the process group.

    device_type defaults to cuda when available. NCCL joins CUDA processes, gloo CPU ones. With
    `devices_per_rank=2` (the paper's two columns in every rank) local rank r takes cuda:2r and
    cuda:2r+1 and its placement names the first; a process alone on a machine with one GPU lets
    both columns share it. Too few GPUs for the layout is a ValueError of one line.
    """
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    rank = int(os.environ.get("RANK", 0))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    if device_type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        needed, visible = devices_per_rank * local_world, torch.cuda.device_count()
        if world_size > 1 and visible < needed:
            raise ValueError(
                f"{local_world} ranks on this machine with {devices_per_rank} GPUs each need {needed} GPUs, "
                f"but {visible} are visible; run fewer ranks (torchrun --nproc-per-node {max(1, visible // devices_per_rank)})"
            )
        index = devices_per_rank * local_rank if world_size > 1 else 0
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device(device_type)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(
            backend, rank=rank, world_size=world_size, device_id=device if device_type == "cuda" else None
        )
    return Placement(rank, local_rank, world_size, device)


def wrap(model: nn.Module, placement: Placement) -> nn.Module:
    """The model under DDP when distributed (it must already sit on its device(s)), else as is.

    A model on one CUDA device names it (`device_ids`); one spread over several (the towers) or on
    the CPU passes none, which is how DDP takes a multi-device module.
    """
    if not placement.distributed:
        return model
    devices = {p.device for p in model.parameters()}
    one_gpu = len(devices) == 1 and placement.device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[placement.device.index] if one_gpu else None)


def teardown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (identity when alone); used for evaluation counts."""
    if dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a one-element list when alone); for per-rank RNG states."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
