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
class GroupArguments:
    """How one layout joins the process group and wraps DDP (`group_arguments` picks them)."""

    backend: str  # init_process_group's backend
    device_id: torch.device | None  # init_process_group's device_id: binds the NCCL group to that one GPU
    ddp_device_ids: list[int] | None  # DistributedDataParallel's device_ids
    ddp_output_device: int | None  # DistributedDataParallel's output_device


def group_arguments(device: torch.device, devices_per_rank: int = 1) -> GroupArguments:
    """The process-group and DDP arguments for a rank whose module starts on `device` and spans
    `devices_per_rank` devices (1: data parallel; 2: the paper's two columns, cuda:2r and cuda:2r+1).

    NCCL joins CUDA ranks, gloo CPU ones. A one-GPU rank binds its group to the GPU (`device_id`:
    the communicator forms at once) and names it to DDP. A two-GPU rank binds nothing: a group bound
    to cuda:2r refuses a collective on cuda:2r+1 ("Attempt to perform collective on tensor not on
    device passed to init_process_group", ProcessGroupNCCL::getNCCLComm), and DDP's buckets of
    column 1 are all-reduced there; and DDP takes a multi-device module only with device_ids and
    output_device None. docs/design.md ("GPU path", §1) cites the sources.
    """
    if device.type != "cuda":
        return GroupArguments("gloo", None, None, None)
    if devices_per_rank > 1:
        return GroupArguments("nccl", None, None, None)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return GroupArguments("nccl", torch.device("cuda", index), [index], index)


@dataclass(frozen=True)
class Placement:
    """Where this process stands: its rank among world_size processes, its (first) device, and how
    many devices its model spans (2 for the towers)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    devices_per_rank: int = 1

    @property
    def group(self) -> GroupArguments:
        """The process-group and DDP arguments of this placement's layout."""
        return group_arguments(self.device, self.devices_per_rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup_from_env(device_type: str | None = None, devices_per_rank: int = 1) -> Placement:
    """Read torchrun's environment, pick this rank's device and join the process group.

    device_type defaults to cuda when available. The group's arguments are `group_arguments`'s. With
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
    placement = Placement(rank, local_rank, world_size, device, devices_per_rank)
    if world_size > 1 and not dist.is_initialized():
        group = placement.group
        dist.init_process_group(group.backend, rank=rank, world_size=world_size, device_id=group.device_id)
    return placement


def wrap(model: nn.Module, placement: Placement) -> nn.Module:
    """The model under DDP when distributed (it must already sit on its device(s)), else as is.

    The device arguments are the placement's (`group_arguments`): a model on one CUDA device names
    it; one spread over two (the towers) or on the CPU passes none, as DDP requires.
    """
    if not placement.distributed:
        return model
    devices = {p.device for p in model.parameters()}
    if len(devices) != placement.devices_per_rank and placement.device.type == "cuda":
        raise ValueError(f"the model spans {sorted(map(str, devices))}, not {placement.devices_per_rank} device(s)")
    group = placement.group
    return DistributedDataParallel(model, device_ids=group.ddp_device_ids, output_device=group.ddp_output_device)


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
