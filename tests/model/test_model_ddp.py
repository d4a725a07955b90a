"""Data parallel: two gloo processes on half batches make the same SGD step as one process on the whole
batch, and the training loop runs under DDP (rank 0 writes, every rank's RNG is kept, validation sums ranks)."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from ports import free_port
from test_train_loop import SyntheticBatches, Tiny

from alexnet.model import distributed
from alexnet.model.alexnet import AlexNet
from alexnet.model.towers import towers_from_alexnet
from alexnet.model.train import TrainConfig, make_optimizer, train

WORLD = 2
BATCH = 4  # two images per rank


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(BATCH, 3, 224, 224, generator=g) * 50, torch.randint(0, 10, (BATCH,), generator=g)


def fresh_model() -> AlexNet:
    torch.manual_seed(0)
    return AlexNet(num_classes=10, dropout=0.0)  # no dropout: the step is deterministic


def sgd_step(model: torch.nn.Module, params: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    optimizer = make_optimizer(params, TrainConfig())
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()


def join(rank: int, port: int) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD)
    )


def worker(rank: int, port: int, out: str, device_type: str, towers: bool = False) -> None:
    """One rank's SGD step on its half of the batch: the whole model on its device, or (towers) the
    paper's two columns on the rank's two devices (cuda:2r, cuda:2r+1; both on the CPU under gloo)."""
    join(rank, port)
    torch.set_num_threads(1)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    placement = distributed.setup_from_env(device_type, devices_per_rank=2 if towers else 1)
    assert placement.distributed and placement.rank == rank
    if towers:
        second = (
            torch.device(placement.device.type, (placement.device.index or 0) + 1) if device_type == "cuda" else "cpu"
        )
        model = towers_from_alexnet(fresh_model(), (placement.device, second))
    else:
        model = fresh_model().to(placement.device)
    ddp = distributed.wrap(model, placement)
    x, y = batch()
    half = slice(rank * BATCH // WORLD, (rank + 1) * BATCH // WORLD)
    sgd_step(ddp, model, x[half].to(placement.device), y[half].to(placement.device))
    if placement.is_main:
        whole = model.to_alexnet() if towers else model
        torch.save({k: v.cpu() for k, v in whole.state_dict().items()}, out)
    distributed.teardown()


def check_against_one_process(out: Path, rtol: float, atol: float) -> None:
    model = fresh_model()
    sgd_step(model, model, *batch())
    ddp_state = torch.load(out)
    for name, p in model.state_dict().items():
        torch.testing.assert_close(ddp_state[name], p, rtol=rtol, atol=atol, msg=name)
    assert not torch.equal(ddp_state["fc8.weight"], fresh_model().fc8.weight)  # a step was taken


def test_ddp_gloo_two_processes_equal_one_process_on_the_union(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path / "ddp.pt"), "cpu"), nprocs=WORLD, join=True)
    check_against_one_process(tmp_path / "ddp.pt", rtol=1e-5, atol=1e-7)


def test_towers_in_two_gloo_ranks_equal_one_process_on_the_union(tmp_path: Path) -> None:
    """The paper's layout scaled out: the two columns inside each rank, DDP across the ranks."""
    mp.spawn(worker, args=(free_port(), str(tmp_path / "ddp.pt"), "cpu", True), nprocs=WORLD, join=True)
    check_against_one_process(tmp_path / "ddp.pt", rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 4, reason="needs four CUDA devices")
def test_towers_in_two_nccl_ranks_on_four_gpus(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path / "ddp.pt"), "cuda", True), nprocs=WORLD, join=True)
    check_against_one_process(tmp_path / "ddp.pt", rtol=1e-4, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_ddp_nccl_two_gpus_equal_one_process_on_the_union(tmp_path: Path) -> None:
    mp.spawn(worker, args=(free_port(), str(tmp_path / "ddp.pt"), "cuda"), nprocs=WORLD, join=True)
    check_against_one_process(tmp_path / "ddp.pt", rtol=1e-4, atol=1e-6)  # cuDNN versus CPU kernels


def train_worker(rank: int, port: int, run_dir: str) -> None:
    join(rank, port)
    torch.set_num_threads(1)
    placement = distributed.setup_from_env("cpu")
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=2, lr=0.05, log_every=1, progress=False, plot=False)
    train(
        Tiny(),
        SyntheticBatches(n_batches=2, seed=rank),
        list(SyntheticBatches(n_batches=1, seed=10 + rank)),
        cfg,
        run_dir,
        placement=placement,
    )
    distributed.teardown()


def test_training_loop_under_ddp(tmp_path: Path) -> None:
    mp.spawn(train_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 4 and len(ckpt["rng"]) == WORLD == len(ckpt["loader"])
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # each rank its own dropout masks
    assert [r["pos"] for r in ckpt["loader"]] == [2, 2]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["val_images"] for r in lines if r["kind"] == "epoch"] == [8, 8]  # both ranks' 4 validation images
    assert json.loads((tmp_path / "config.json").read_text())["world_size"] == WORLD


class SignalOnRank0(SyntheticBatches):
    """Rank 0 sends itself SIGTERM as its batch 1 is handed over; the other rank gets no signal."""

    def __init__(self, rank: int, **kw) -> None:
        super().__init__(seed=rank, **kw)
        self.rank = rank

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if i == 1 and self.rank == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            yield batch


def stop_worker(rank: int, port: int, run_dir: str) -> None:
    join(rank, port)
    torch.set_num_threads(1)
    placement = distributed.setup_from_env("cpu")
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=1, lr=0.05, log_every=3, progress=False, plot=False, schedule="step")
    state = train(Tiny(), SignalOnRank0(rank, n_batches=8), None, cfg, run_dir, placement=placement)
    Path(run_dir, f"stopped-{rank}.json").write_text(json.dumps([state.step, state.stopped_by]))
    distributed.teardown()


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    """SIGTERM reaches rank 0 during step 2; the ranks agree at the next log step (3) and all stop there."""
    mp.spawn(stop_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    stops = [json.loads((tmp_path / f"stopped-{r}.json").read_text()) for r in range(WORLD)]
    assert stops == [[3, "SIGTERM"], [3, "a signal to another rank"]]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ckpt["state"]["step"] == 3 and [r["pos"] for r in ckpt["loader"]] == [3, 3]
