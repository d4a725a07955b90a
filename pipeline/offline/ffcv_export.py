"""`export-ffcv`: the shards → FFCV `.beton` files for `--loader ffcv` (`OUT/ffcv/<split>.beton`).

Sample i of a beton is the i-th sample of its split read through the tars in manifest order
(`ShardReader`), the numbering every loader's `sample_order` permutes, so FFCV's loader can be
handed the exact sample ids of an epoch. Each sample has an `image` (`RGBImageField`) and a
`label` (`IntField`).

Two modes:

- `jpg` (default): the shard's JPEG bytes are stored as they are, not re-encoded, so the files
  every other loader decodes are byte for byte the ones FFCV decodes, at the quality `prepare`
  chose, and the beton is about the size of the tars. FFCV's own `RGBImageField` can only take pixels and
  re-encodes them with OpenCV, so `StoredJpegField` (the same field, taking bytes) writes them,
  and the field's type id is then set to `RGBImageField`'s: the result is an ordinary FFCV
  image beton that any FFCV reader opens without custom fields.
- `raw`: the decoded 256×256×3 pixels (FFCV's fastest mode: no decoding at load time), 196,608
  bytes an image: some 250 GB for ImageNet's 1.28 M training images (13× the JPEGs on the
  demo data).

A beton appears under its final name only when complete (written to `name.tmp`, fsynced,
renamed), and the manifest's `"ffcv"` entry records it. FFCV's writer waits for its worker
processes to count every sample, so a worker that died would hang it; the worker here
(`_export_job`, FFCV's own loop plus error capture) keeps counting after a failure and the
export then raises the first error instead.
"""

from __future__ import annotations

import ctypes
import io
import multiprocessing
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from alexnet.pipeline.offline.prepare import JPEG_QUALITY
from alexnet.pipeline.store.atomic import publish, tmp_path
from alexnet.pipeline.store.betons import FFCV_DIR, MANIFEST_KEY, MODES, Mode, beton_path, import_ffcv
from alexnet.pipeline.store.manifest import NotPrepared, read_manifest, write_manifest
from alexnet.pipeline.store.shards import ShardReader, decode_jpeg

SPLITS = ("train", "val")
PAGE_SIZE = 1 << 21  # FFCV's smallest page (2 MiB): each writer process pads at most one page
CHUNK = 64  # samples per writer task
ERROR_BYTES = 2048


class ExportError(RuntimeError):
    """A sample could not be written; the beton was not published."""


@dataclass(frozen=True)
class BetonInfo:
    """What the manifest records about one beton (`path` relative to the data folder)."""

    path: str
    mode: str
    samples: int
    bytes: int
    shards: int
    shard_bytes: int
    quality: int | None


@dataclass(frozen=True)
class ExportResult:
    """One written beton and how long it took."""

    split: str
    info: BetonInfo
    seconds: float


class ShardSamples:
    """A split's samples by global index (`ShardReader`), as FFCV's writer asks for them.

    An item is `(image, label)`: the stored JPEG bytes, or with `raw` the decoded pixels.
    """

    def __init__(self, reader: ShardReader, raw: bool) -> None:
        self.reader, self.raw = reader, raw

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[bytes | np.ndarray, int]:
        jpeg, label = self.reader.sample(index)
        return (decode_jpeg(jpeg) if self.raw else bytes(jpeg)), label


def stored_jpeg_field(quality: int):
    """An `RGBImageField` that takes a JPEG's bytes and stores them unchanged (mode `jpg`)."""
    from ffcv.fields import RGBImageField
    from ffcv.fields.rgb_image import IMAGE_MODES

    class StoredJpegField(RGBImageField):
        def __reduce__(self):
            return stored_jpeg_field, (quality,)  # a local class: rebuilt, in a spawned writer process

        def encode(self, destination, jpeg: bytes, malloc) -> None:
            with Image.open(io.BytesIO(jpeg)) as im:
                if im.format != "JPEG" or im.mode != "RGB":
                    raise ValueError(f"not an RGB JPEG ({im.format}/{im.mode})")
                width, height = im.size
            destination["mode"] = IMAGE_MODES["jpg"]
            destination["width"], destination["height"] = width, height
            destination["data_ptr"], storage = malloc(len(jpeg))
            storage[:] = np.frombuffer(jpeg, np.uint8)

    return StoredJpegField(write_mode="jpg", jpeg_quality=quality)


def _export_job(
    error, input_queue, metadata_sm, metadata_type, fields, allocator, done_number, allocations_queue, dataset
) -> None:
    """FFCV's `worker_job_indexed_dataset`, except that a failure is recorded and counting goes on.

    After the first error (here or in another process) the remaining samples are only counted,
    so that FFCV's progress loop, which waits for every sample, ends.
    """
    from ffcv.writer import handle_sample

    metadata = np.frombuffer(metadata_sm.buf, dtype=metadata_type)
    with allocator:
        while (chunk := input_queue.get()) is not None:
            if not error.value:
                try:
                    for dest_ix, source_ix in chunk:
                        handle_sample(dataset[source_ix], dest_ix, metadata_type.names, metadata, allocator, fields)
                except Exception as e:
                    error.value = f"sample {source_ix}: {type(e).__name__}: {e}".encode()[: ERROR_BYTES - 1]
            with done_number.get_lock():
                done_number.value += len(chunk)
    allocations_queue.put(allocator.allocations)


def write_beton(path: Path, samples: ShardSamples, fields: dict, workers: int) -> None:
    """Write `samples` to `path` atomically through FFCV's `DatasetWriter` on `workers` processes."""
    from ffcv.utils import chunks
    from ffcv.writer import DatasetWriter

    tmp = tmp_path(path)
    error = multiprocessing.Array(ctypes.c_char, ERROR_BYTES)
    try:
        writer = DatasetWriter(str(tmp), fields, page_size=PAGE_SIZE, num_workers=workers)
        tasks = chunks(list(enumerate(range(len(samples)))), CHUNK)
        writer._write_common(len(samples), tasks, partial(_export_job, error), (samples,))
        if error.value:
            raise ExportError(f"{path.name}: {error.value.decode()}")
        mark_as_image_field(tmp, list(fields).index("image"))
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def mark_as_image_field(path: Path, field_index: int) -> None:
    """Give field `field_index` the type id of FFCV's `RGBImageField`.

    FFCV's writer records a field's type by its exact class, so a subclass (`StoredJpegField`)
    is written as "custom" (255); its metadata and data are `RGBImageField`'s own.
    """
    from ffcv.fields import RGBImageField
    from ffcv.types import TYPE_ID_HANDLER, FieldDescType, HeaderType

    type_id = next(k for k, v in TYPE_ID_HANDLER.items() if v is RGBImageField)
    offset = HeaderType.itemsize + field_index * FieldDescType.itemsize
    desc = np.fromfile(path, dtype=FieldDescType, count=1, offset=offset)
    desc["type_id"] = type_id
    with open(path, "rb+") as f:
        f.seek(offset)
        f.write(desc.tobytes())


def export_splits(data: Path) -> dict[str, ShardReader]:
    """The splits the manifest lists, each checked and read through `ShardReader`; refuses when there are none."""
    manifest = read_manifest(data)
    splits = [split for split in SPLITS if manifest.get("splits", {}).get(split, {}).get("shards")]
    if not splits:
        raise NotPrepared(f"{data}: the manifest lists no shards; run `alexnet-tools prepare --out {data}` first")
    return {split: ShardReader.for_split(data, split) for split in splits}


def export(
    data: Path, mode: Mode = "jpg", workers: int | None = None, announce: Callable[[str], None] = print
) -> list[ExportResult]:
    """Write `data/ffcv/<split>.beton` for every split with shards and record each in the manifest.

    `announce` gets one line before each split (FFCV's writer then shows its progress bar).
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: choose one of {', '.join(MODES)}")
    splits = export_splits(data)
    manifest = read_manifest(data)
    import_ffcv()
    from ffcv.fields import IntField, RGBImageField

    quality = manifest.get("settings", {}).get("quality")
    (data / FFCV_DIR).mkdir(exist_ok=True)
    results = []
    for split, reader in splits.items():
        path = beton_path(data, split, mode)
        samples = ShardSamples(reader, raw=mode == "raw")
        image = RGBImageField(write_mode="raw") if mode == "raw" else stored_jpeg_field(quality or JPEG_QUALITY)
        announce(f"{split}: {len(samples)} samples → {path}")
        start = time.perf_counter()
        write_beton(path, samples, {"image": image, "label": IntField()}, workers or os.cpu_count() or 1)
        seconds = time.perf_counter() - start
        info = BetonInfo(
            path=str(path.relative_to(data)),
            mode=mode,
            samples=len(samples),
            bytes=path.stat().st_size,
            shards=len(reader.tars),
            shard_bytes=sum(t.stat().st_size for t in reader.tars),
            quality=quality if mode == "jpg" else None,
        )
        manifest = read_manifest(data)
        manifest.setdefault(MANIFEST_KEY, {})[path.stem] = asdict(info)
        write_manifest(data, manifest)
        results.append(ExportResult(split, info, seconds))
    return results
