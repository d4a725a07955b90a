"""The process-group and DDP arguments of each layout (data or towers, CPU or CUDA), without a GPU.

A NCCL group bound to one GPU (`init_process_group(device_id=...)`) refuses collectives on any other,
and DDP takes a module spread over two GPUs only with device_ids and output_device None, so the
towers bind nothing; docs/design.md ("GPU path", §1) has the source lines. The marked 2- and 4-GPU
tests in test_model_ddp.py start both CUDA layouts for real.
"""

import pytest
import torch

from alexnet.model.distributed import GroupArguments, Placement, group_arguments


def test_data_parallel_on_cuda_binds_the_group_and_names_the_gpu_to_ddp() -> None:
    assert group_arguments(torch.device("cuda", 3)) == GroupArguments("nccl", torch.device("cuda", 3), [3], 3)


def test_towers_on_cuda_leave_the_group_unbound_and_ddp_without_device_ids() -> None:
    # rank 1 of a 4-GPU machine: columns on cuda:2 and cuda:3
    assert group_arguments(torch.device("cuda", 2), devices_per_rank=2) == GroupArguments("nccl", None, None, None)


@pytest.mark.parametrize("devices_per_rank", [1, 2])
def test_cpu_layouts_use_gloo_with_no_device(devices_per_rank: int) -> None:
    assert group_arguments(torch.device("cpu"), devices_per_rank) == GroupArguments("gloo", None, None, None)


def test_a_placement_carries_its_layouts_arguments() -> None:
    towers = Placement(rank=1, local_rank=1, world_size=2, device=torch.device("cuda", 2), devices_per_rank=2)
    assert towers.group.device_id is None and towers.group.ddp_device_ids is None
    data = Placement(rank=1, local_rank=1, world_size=2, device=torch.device("cuda", 1))
    assert data.group.device_id == torch.device("cuda", 1) and data.group.ddp_device_ids == [1]
