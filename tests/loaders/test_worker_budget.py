"""The loaders' default CPU budget per rank: the cores this process may use (its affinity) divided by the
ranks on this machine (torchrun's LOCAL_WORLD_SIZE), at least one; checked in two gloo ranks started
with the environment torchrun gives them, and DALI's decoding threads follow it."""

import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from ports import free_port
from shard_data import BATCH, write_prepared

from alexnet.model import distributed
from alexnet.pipeline.loaders import make_loader
from alexnet.pipeline.loaders.contract import default_workers

WORLD = 2
needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs os.sched_getaffinity")


def rank_worker(rank: int, port: int, data: str, out: str) -> None:
    """One rank as torchrun starts it: join gloo, then build both loaders with the default workers.
    Rank 1 is first bound to one core (as taskset, a cpuset or SLURM's binding would)."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    if rank == 1:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
    placement = distributed.setup_from_env("cpu")
    resolved = {"cores": len(os.sched_getaffinity(0))}
    for kind in ("dali", "torch"):
        loader = make_loader(kind, data, "train", BATCH, rank=placement.rank, world_size=placement.world_size)
        resolved[kind] = loader.config.workers
        if kind == "dali":
            resolved["dali_threads"] = loader.decoder_buffers["threads"]
        loader.close()
    Path(out, f"rank{rank}.json").write_text(json.dumps(resolved))
    distributed.teardown()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_prepared(tmp_path_factory.mktemp("shards"))


@needs_affinity
def test_two_ranks_share_this_machines_cores(data, tmp_path):
    mp.spawn(rank_worker, args=(free_port(), str(data), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD)]
    assert ranks[0]["cores"] == len(os.sched_getaffinity(0)) and ranks[1]["cores"] == 1
    for got in ranks:
        expected = max(1, got["cores"] // WORLD)
        assert got["dali"] == got["torch"] == got["dali_threads"] == expected, got


@needs_affinity
def test_alone_a_process_takes_every_core_it_may_use(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(len(os.sched_getaffinity(0)) + 1))
    assert default_workers() == 1  # more ranks than cores: still one each
