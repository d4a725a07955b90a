"""`alexnet-bench loaders`: every loader over the same shards, the same work, and a decode ceiling.

Each loader runs the training augmentation over the train split with full batches landing on the
device, epoch after epoch (as training would), after `warmup` batches; images/s counts the
timed batches only. The *decode ceiling* is plain Pillow JPEG decoding of the same stored images
in a process pool on this process's cores (`default_workers()`), nothing else (the issue's definition; Pillow and DALI's CPU path
both use libjpeg-turbo). DALI's own full-image CPU decoder over the same images is measured too,
as a second ceiling, and, when the FFCV loader runs, FFCV's own decoder (its reader and
`SimpleRGBImageDecoder` over the JPEG beton, nothing after it) as a third: each loader is then
compared with its own decoder as well (`vs_ffcv_decoder`). CPU use is the CPU time of this process and all its live descendants
(threads, DataLoader workers, pool workers) over the timed stretch, read from /proc, in cores.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from alexnet.pipeline.bench.charts import bar_chart
from alexnet.pipeline.bench.timing import Measurement, Stopwatch, best_of
from alexnet.pipeline.loaders import Loader, make_loader
from alexnet.pipeline.loaders.contract import default_workers
from alexnet.pipeline.store.manifest import index_path
from alexnet.pipeline.store.shards import ShardReader, reader_pool, worker_reader

WARMUP_BATCHES = 3
CEILING_CHUNK = 64  # images per pool task


def endless(loader: Loader) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches of epoch 0, 1, 2, … as a training loop would ask for them."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_loader(
    kind: str,
    data: Path,
    device: torch.device,
    batch_size: int,
    batches: int,
    warmup: int = WARMUP_BATCHES,
    workers: int | None = None,
    **options: Any,
) -> Measurement:
    """Images/s of one loader's training batches on `device`, after `warmup` batches."""
    loader = make_loader(kind, data, "train", batch_size, device=device, workers=workers, last_batch="drop", **options)
    try:
        check_batches(len(loader), data, batch_size)
        return time_batches(endless(loader), device, batches, warmup)
    finally:
        loader.close()


def check_batches(count: int, data: Path, batch_size: int) -> None:
    """Refuse a train split too small for one full batch (an endless loop of empty epochs otherwise)."""
    if count == 0:
        raise ValueError(
            f"{data}: the train split holds fewer than one batch of {batch_size} samples; lower --batch-size"
        )


def time_batches(
    batches_out: Iterator[tuple[Any, ...]], device: torch.device, batches: int, warmup: int
) -> Measurement:
    """Images/s of `batches` batches of (images, labels, …) from `batches_out` after `warmup` untimed ones."""
    try:
        for _ in range(warmup):
            next(batches_out)
        synchronize(device)
        watch, images = Stopwatch(), 0
        watch.start()
        for _ in range(batches):
            labels = next(batches_out)[1]
            images += len(labels)
        synchronize(device)
        return watch.stop(images)
    finally:
        batches_out.close()


def measure_ffcv_ceiling(
    data: Path, batch_size: int, batches: int, warmup: int = WARMUP_BATCHES, workers: int | None = None
) -> Measurement:
    """FFCV's decoder alone: its reader and full-image JPEG decoding of the train beton, nothing after it."""
    from alexnet.pipeline.loaders.ffcv_loader import decode_only, stop

    loader = decode_only(data, batch_size, workers)
    check_batches(len(loader), data, batch_size)

    def epochs() -> Iterator[tuple[torch.Tensor, ...]]:
        while True:
            running = iter(loader)
            try:
                yield from running
            finally:
                stop(running)

    return time_batches(epochs(), torch.device("cpu"), batches, warmup)


def _decode_chunk(indices: np.ndarray) -> int:
    """Pool worker: decode these JPEGs of one tar with Pillow; nothing else."""
    reader = worker_reader()
    for _, jpeg, _ in reader.samples(indices):
        with Image.open(io.BytesIO(jpeg)) as im:
            im.load()
    return len(indices)


def measure_pillow_ceiling(data: Path, images: int, workers: int | None = None) -> Measurement:
    """Plain Pillow decoding of `images` stored JPEGs (cycling through the train split if it is smaller) on `workers` processes."""
    reader = ShardReader.for_split(data, "train")
    tasks = reader.chunks(CEILING_CHUNK, np.arange(images) % len(reader))
    with reader_pool(reader, workers or default_workers()) as pool:
        pool.map(_decode_chunk, tasks[:2])  # start the workers and warm the page cache
        watch = Stopwatch()
        watch.start()
        done = sum(pool.imap_unordered(_decode_chunk, tasks))
        return watch.stop(done)


def measure_dali_ceiling(
    data: Path, batch_size: int, batches: int, warmup: int = WARMUP_BATCHES, workers: int | None = None
) -> Measurement:
    """DALI's CPU decoder alone: the reader and full-image decoding, nothing after it."""
    from nvidia.dali import fn, pipeline_def, types

    tars = ShardReader.for_split(data, "train").tars

    @pipeline_def(
        batch_size=batch_size, num_threads=workers or default_workers(), device_id=None, seed=0, exec_dynamic=True
    )
    def decode_only():
        jpegs, _ = fn.readers.webdataset(
            paths=[str(t) for t in tars],
            index_paths=[str(index_path(t)) for t in tars],
            ext=["jpg", "cls"],
        )
        return fn.decoders.image(jpegs, device="cpu", output_type=types.RGB)

    pipe = decode_only()
    pipe.build()
    for _ in range(warmup):
        pipe.run()
    watch = Stopwatch()
    watch.start()
    for _ in range(batches):
        pipe.run()
    result = watch.stop(batches * batch_size)
    del pipe
    return result


@dataclass
class BenchResult:
    """Everything one `alexnet-bench loaders` run measured."""

    device: str
    batch_size: int
    batches: int
    rounds: int
    cores: int
    decode_ceiling: Measurement
    dali_decoder: Measurement | None
    loaders: dict[str, Measurement]
    ffcv_decoder: Measurement | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"device", "decode_ceiling": {"images_per_s"}, "loaders": {name: {"images_per_s", …}}, …}`."""
        ceiling = self.decode_ceiling.images_per_s
        torch_rate = self.loaders["torch"].images_per_s if "torch" in self.loaders else None
        ffcv_rate = self.ffcv_decoder.images_per_s if self.ffcv_decoder else None
        loaders = {
            name: {
                **m.as_dict(),
                "vs_torch": m.images_per_s / torch_rate if torch_rate else None,
                "vs_decode_ceiling": m.images_per_s / ceiling,
                **({"vs_ffcv_decoder": m.images_per_s / ffcv_rate} if ffcv_rate and name == "ffcv" else {}),
            }
            for name, m in self.loaders.items()
        }
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "batches": self.batches,
            "rounds": self.rounds,
            "cores": self.cores,
            "decode_ceiling": {"decoder": "pillow", **self.decode_ceiling.as_dict()},
            "dali_decode_ceiling": None
            if self.dali_decoder is None
            else {"decoder": "dali-cpu", **self.dali_decoder.as_dict()},
            "ffcv_decode_ceiling": None
            if self.ffcv_decoder is None
            else {"decoder": "ffcv", **self.ffcv_decoder.as_dict()},
            "loaders": loaders,
        }


def run_bench(
    data: Path,
    kinds: list[str],
    device: str = "cpu",
    batch_size: int = 256,
    batches: int = 20,
    warmup: int = WARMUP_BATCHES,
    workers: int | None = None,
    rounds: int = 1,
    normalize: str = "mean",
    dali_options: dict[str, Any] | None = None,
    **cache: Any,
) -> BenchResult:
    """The decode ceilings, then each loader, on the same shards with the same settings.

    `cache` (`cache_dir`, `cache_max_bytes`) goes to `make_loader`, for an s3:// `data`.

    With `rounds` > 1 the whole sequence runs that many times and each row keeps its fastest
    round, so that a burst of load from elsewhere on a shared machine hits no row alone.
    `dali_options` go to the DALI loader only (e.g. `hw_decoder_load`).
    """
    dev = torch.device(device)
    runs: dict[str, Callable[[], Measurement]] = {
        "pillow": lambda: measure_pillow_ceiling(data, batch_size * batches, workers)
    }
    if dev.type == "cpu":
        runs["dali-decoder"] = lambda: measure_dali_ceiling(data, batch_size, batches, warmup, workers)
    if "ffcv" in kinds:  # FFCV decodes on the host whatever the device
        runs["ffcv-decoder"] = lambda: measure_ffcv_ceiling(data, batch_size, batches, warmup, workers)
    for kind in kinds:
        options = {"normalize": normalize, **(dali_options or {} if kind == "dali" else {}), **cache}
        runs[kind] = lambda kind=kind, options=options: measure_loader(
            kind, data, dev, batch_size, batches, warmup, workers, **options
        )
    best = best_of(runs, rounds)
    pillow, dali, ffcv = best.pop("pillow"), best.pop("dali-decoder", None), best.pop("ffcv-decoder", None)
    return BenchResult(device, batch_size, batches, rounds, workers or default_workers(), pillow, dali, best, ffcv)


def format_table(result: BenchResult) -> str:
    """The printed table: one row per ceiling and loader."""
    j = result.to_json()
    pillow = j["decode_ceiling"]["images_per_s"]
    rows = [("decode ceiling (Pillow)", j["decode_ceiling"], None, 1.0)]
    for name, key in (("DALI CPU", "dali_decode_ceiling"), ("FFCV decoder", "ffcv_decode_ceiling")):
        if j[key]:
            rows.append((f"decode ceiling ({name})", j[key], None, j[key]["images_per_s"] / pillow))
    rows += [(f"loader {name}", m, m["vs_torch"], m["vs_decode_ceiling"]) for name, m in j["loaders"].items()]
    best = f", best of {result.rounds} rounds" if result.rounds > 1 else ""
    lines = [
        f"{result.cores} cores, device {result.device}, batch {result.batch_size}, {result.batches} timed batches{best}",
        f"{'':<30}{'images/s':>10}{'× torch':>9}{'× ceiling':>11}{'CPU cores':>11}{'images/CPU·s':>14}",
    ]
    for name, m, vs_torch, vs_ceiling in rows:
        t = "" if vs_torch is None else f"{vs_torch:.2f}"
        per_cpu = "-" if m["images_per_cpu_s"] is None else f"{m['images_per_cpu_s']:.0f}"
        lines.append(
            f"{name:<30}{m['images_per_s']:>10.0f}{t:>9}{vs_ceiling:>11.2f}{m['cpu_cores']:>11.2f}{per_cpu:>14}"
        )
    if "vs_ffcv_decoder" in j["loaders"].get("ffcv", {}):
        lines.append(
            f"loader ffcv against its own decoder (FFCV decoder ceiling): {j['loaders']['ffcv']['vs_ffcv_decoder']:.2f}"
        )
    return "\n".join(lines)


CEILING_BARS = (("DALI CPU\ndecode", "dali_decode_ceiling"), ("FFCV\ndecode", "ffcv_decode_ceiling"))


def plot(result: BenchResult, path: Path) -> None:
    """A bar chart of images/s: the ceilings, then each loader."""
    j = result.to_json()
    ceilings = [("Pillow decode\n(ceiling)", j["decode_ceiling"])]
    ceilings += [(label, j[key]) for label, key in CEILING_BARS if j[key]]
    names = [label for label, _ in ceilings] + list(j["loaders"])
    rates = [c["images_per_s"] for _, c in ceilings] + [m["images_per_s"] for m in j["loaders"].values()]
    colours = ["0.6"] * (len(names) - len(j["loaders"])) + [
        "tab:green" if n == "dali" else "tab:blue" for n in j["loaders"]
    ]
    title = f"Training batches on {result.device}, {result.cores} cores, batch {result.batch_size}"
    bar_chart(names, rates, colours, title, path)
