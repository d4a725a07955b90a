"""`export-ffcv`, and what is particular to the FFCV loader: its keyed draws and its threads.

The contract and spec tests every loader shares (FFCV's included) are in test_loaders.py; the
tiny shards are loader_data's (train labels 0..47 in shard order, so a training label is also
the sample's id; val 100..120).
"""

import io
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy.stats import chisquare
from shard_data import BATCH, PCA, QUALITY, decode_stored, tar_samples, write_prepared

from alexnet.pipeline.loaders import make_loader
from alexnet.pipeline.offline.image import encode_jpeg
from alexnet.pipeline.paper import MAX_CROP_OFFSET, PCA_ALPHA_STD
from alexnet.pipeline.store.atomic import TMP_SUFFIX
from alexnet.pipeline.store.manifest import read_manifest, write_manifest
from alexnet.pipeline.store.pca_file import PCA_FILE, save_pca
from alexnet.pipeline.store.shards import ShardWriter, shard_name

needs_ffcv = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ffcv") is None, reason="FFCV is not installed (pip install -e '.[ffcv]')"
)


def export_cli(*args: str):
    from alexnet.tools.export_ffcv import export_ffcv

    return CliRunner().invoke(export_ffcv, list(args))


EXPORT_OUTPUT: dict[str, str] = {}  # what the command printed, by mode


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = write_prepared(tmp_path_factory.mktemp("shards"))
    for mode, extra in (("jpg", []), ("raw", ["--raw"])):
        result = export_cli("--data", str(out), "--workers", "2", *extra)
        assert result.exit_code == 0, result.output
        EXPORT_OUTPUT[mode] = result.stdout  # without FFCV's progress bar (stderr)
    return out


@pytest.fixture(scope="module")
def stored(data) -> dict[str, list[tuple[bytes, int]]]:
    """Each split's (JPEG bytes, label) in tar name order."""
    return {
        split: [
            (bytes(jpeg), label) for tar in sorted((data / split).glob("*.tar")) for _, jpeg, label in tar_samples(tar)
        ]
        for split in ("train", "val")
    }


@pytest.fixture(scope="module")
def decoded(data) -> dict[int, torch.Tensor]:
    return decode_stored(data)


def loader(data: Path, split: str = "train", mode: str = "jpg", **kw):
    """The FFCV loader through make_loader (`ffcv` or `ffcv-raw`), with two threads."""
    kw.setdefault("workers", 2)
    return make_loader("ffcv-raw" if mode == "raw" else "ffcv", data, split, kw.pop("batch_size", BATCH), **kw)


def run(data: Path, split: str = "train", **kw) -> list[tuple]:
    """One epoch of a fresh loader, as a list of its batches."""
    ld = loader(data, split, **kw)
    try:
        return list(ld)
    finally:
        ld.close()


def read_beton(path: Path) -> tuple[list[bytes], list[int]]:
    """Each sample's stored image bytes and label, straight from the file (FFCV's reader tables)."""
    from ffcv.reader import Reader

    reader = Reader(str(path))
    sizes = dict(zip(reader.alloc_table["ptr"].tolist(), reader.alloc_table["size"].tolist()))
    raw = path.read_bytes()
    images = [raw[p : p + sizes[p]] for p in reader.metadata["f0"]["data_ptr"].tolist()]
    return images, reader.metadata["f1"].tolist()


# --- export ----------------------------------------------------------------------------------


def test_export_refuses_without_shards(tmp_path):
    result = export_cli("--data", str(tmp_path))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and str(tmp_path) in lines[0] and "alexnet-tools prepare" in lines[0], result.output


@needs_ffcv
def test_export_records_the_betons_in_the_manifest(data):
    recorded = read_manifest(data)["ffcv"]
    assert set(recorded) == {"train", "val", "train-raw", "val-raw"}
    train, val_raw = recorded["train"], recorded["val-raw"]
    assert train == {
        "path": "ffcv/train.beton",
        "mode": "jpg",
        "samples": 48,
        "bytes": (data / "ffcv/train.beton").stat().st_size,
        "shards": 3,
        "shard_bytes": sum(t.stat().st_size for t in (data / "train").glob("*.tar")),
        "quality": QUALITY,
    }
    assert val_raw["mode"] == "raw" and val_raw["samples"] == 21 and val_raw["quality"] is None
    assert not list((data / "ffcv").glob(f"*{TMP_SUFFIX}"))
    summary = EXPORT_OUTPUT["jpg"].splitlines()[-2:]
    assert summary[0].startswith("train: 48 samples, jpg,") and summary[0].endswith("→ ffcv/train.beton")
    assert summary[1].startswith("val: 21 samples, jpg,") and "(tars " in summary[1]
    assert EXPORT_OUTPUT["raw"].splitlines()[-1].endswith("→ ffcv/val-raw.beton")


@needs_ffcv
@pytest.mark.parametrize("split", ["train", "val"])
def test_jpg_beton_keeps_the_shard_jpegs_in_shard_order(data, stored, split):
    from ffcv.fields import RGBImageField
    from ffcv.reader import Reader

    images, labels = read_beton(data / "ffcv" / f"{split}.beton")
    assert images == [jpeg for jpeg, _ in stored[split]]
    assert labels == [label for _, label in stored[split]]
    assert type(Reader(str(data / "ffcv" / f"{split}.beton")).handlers["image"]) is RGBImageField


@needs_ffcv
def test_raw_beton_holds_the_pillow_pixels(data, stored, decoded):
    images, labels = read_beton(data / "ffcv" / "train-raw.beton")
    assert labels == [label for _, label in stored["train"]]
    for pixels, label in zip(images, labels):
        assert np.array_equal(np.frombuffer(pixels, np.uint8).reshape(256, 256, 3), decoded[label].numpy())


@needs_ffcv
def test_export_stops_on_a_bad_sample_and_publishes_nothing(tmp_path):
    from alexnet.pipeline.offline.ffcv_export import ExportError, export

    (tmp_path / "train").mkdir()
    writer = ShardWriter(tmp_path / "train" / shard_name("train", 0))
    png = io.BytesIO()
    Image.new("RGB", (256, 256)).save(png, "PNG")
    for i, image in enumerate([encode_jpeg(Image.new("RGB", (256, 256)), QUALITY), png.getvalue()]):
        writer.add(f"img{i}", image, i)
    writer.close()
    shard = {"name": writer.path.name, "samples": 2, "bytes": writer.path.stat().st_size, "sha256": writer.sha256}
    split = {"samples": 2, "shards": [shard]}
    write_manifest(tmp_path, {"complete": True, "settings": {"quality": QUALITY}, "splits": {"train": split}})
    with pytest.raises(ExportError, match="sample 1: .*not an RGB JPEG"):
        export(tmp_path, workers=2, announce=lambda line: None)
    assert not list((tmp_path / "ffcv").iterdir())
    assert "ffcv" not in read_manifest(tmp_path)


def test_missing_ffcv_says_what_and_how_to_install(monkeypatch):
    from alexnet.pipeline.store.betons import FfcvMissing, import_ffcv

    monkeypatch.setitem(sys.modules, "ffcv.fields", None)
    with pytest.raises(FfcvMissing) as e:
        import_ffcv()
    assert "ffcv.fields" in str(e.value)
    assert "apt-get install pkg-config libturbojpeg0-dev libopencv-dev" in str(e.value)
    assert "pip install -e '.[ffcv]'" in str(e.value)


# --- the loader ------------------------------------------------------------------------------


@needs_ffcv
def test_draw_generator_over_many_samples():
    """The keyed generator alone, on 100,000 samples: uniform offsets, fair flips, α ~ N(0, 0.1²) independent."""
    from alexnet.pipeline.loaders.ffcv_loader import train_draws

    d = train_draws(12345, np.arange(100_000))
    assert chisquare(np.bincount(np.concatenate([d["dx"], d["dy"]]), minlength=MAX_CROP_OFFSET + 1)).pvalue > 1e-3
    assert abs(d["flip"].mean() - 0.5) < 4 * 0.5 / np.sqrt(100_000)
    assert np.allclose(d["alpha"].mean(axis=0), 0, atol=4 * PCA_ALPHA_STD / np.sqrt(100_000))
    assert np.allclose(np.cov(d["alpha"].T), PCA_ALPHA_STD**2 * np.eye(3), atol=0.05 * PCA_ALPHA_STD**2)
    assert np.corrcoef(d["dx"], d["dy"])[0, 1] < 0.02


@needs_ffcv
def test_draws_depend_on_key_and_sample_only(data):
    """A sample's draws are the same whatever its batch, position or rank; another key changes them."""
    from alexnet.pipeline.loaders.ffcv_loader import train_draws

    ids = np.array([3, 17, 40])
    forward, backward = train_draws(99, ids), train_draws(99, ids[::-1])
    assert all(np.array_equal(forward[k], backward[k][::-1]) for k in forward)
    assert not np.array_equal(train_draws(100, ids)["alpha"], forward["alpha"])

    def by_label(batches):
        return {
            int(label): (int(d["dx"][i]), int(d["dy"][i]), bool(d["flip"][i]))
            for _, labels, d in batches
            for i, label in enumerate(labels)
        }

    one = by_label(run(data, with_draws=True, seed=2, last_batch="partial"))
    two = {}
    for rank in (0, 1):
        two |= by_label(run(data, with_draws=True, seed=2, last_batch="partial", rank=rank, world_size=2))
    assert one == two


@needs_ffcv
def test_batch_buffers_are_reused_only_once_let_go():
    """The fused step's output arrays: one still held, even through a view of a view, is never
    handed out again; let go, it is; after a burst of held batches the pool shrinks back to `keep`."""
    from alexnet.pipeline.loaders.ffcv_loader import BatchBuffers

    buffers = BatchBuffers((4, 3), keep=2)
    first = buffers.take()
    first_id, view = id(first), torch.from_numpy(first[:2]).t()
    del first
    second = buffers.take()
    assert id(second) != first_id and len(buffers.arrays) == 2
    del second, view
    assert id(buffers.take()) == first_id
    held = [buffers.take() for _ in range(5)]
    assert len(buffers.arrays) == 5 and len({id(a) for a in held}) == 5
    del held
    buffers.take()
    assert len(buffers.arrays) == 2


@needs_ffcv
@pytest.mark.parametrize("normalize", ["mean", "std"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_step_equals_crops_then_device_step(data, normalize, channels_last):
    """The CPU's fused training step against the GPU path's two steps on the same images and draws:
    `_random_crops` gives each sample's window (checked against the reference crop and flip), and
    `DeviceStep` on those windows gives what `_random_finish` writes, to float rounding."""
    from alexnet.pipeline import augment
    from alexnet.pipeline.loaders.contract import LoaderConfig
    from alexnet.pipeline.loaders.device_step import DeviceStep
    from alexnet.pipeline.loaders.ffcv_loader import U64, _random_crops, _random_finish, train_draws

    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (5, 256, 256, 3), dtype=np.uint8)
    ids, key = np.array([3, 0, 41, 7, 19], np.uint64), 2024
    draws = train_draws(key, ids)
    assert draws["flip"].any() and not draws["flip"].all()
    windows = _random_crops(images, np.empty((5, 224, 224, 3), np.uint8), ids, U64(key))
    for i, window in enumerate(windows):
        expected = augment.crop(torch.from_numpy(images[i]), int(draws["dx"][i]), int(draws["dy"][i]))
        assert torch.equal(torch.from_numpy(window), augment.hflip(expected) if draws["flip"][i] else expected)
    config = LoaderConfig(data, "train", 5, torch.device("cpu"), normalize=normalize, channels_last=channels_last)
    step = DeviceStep(PCA, config)
    alpha = torch.from_numpy(draws["alpha"])
    expected = step(torch.from_numpy(windows), alpha)
    out = np.full((5, 224, 224, 3) if channels_last else (5, 3, 224, 224), np.nan, np.float32)
    scale = (1.0 / step.std).numpy()
    fused = torch.from_numpy(
        _random_finish(images, out, ids, U64(key), step.means(alpha).numpy(), scale, channels_last)
    )
    torch.testing.assert_close(fused.movedim(-1, 1) if channels_last else fused, expected, rtol=1e-6, atol=1e-4)


def ffcv_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()]


@needs_ffcv
def test_a_new_pass_ends_an_unfinished_one(data):
    ld = loader(data, seed=4)
    unfinished = iter(ld)
    next(unfinished)
    assert len(list(ld)) == len(ld)
    assert list(unfinished) == []
    ld.close()
    assert not ffcv_threads()


@needs_ffcv
def test_state_of_another_loader_is_refused(data):
    ld = loader(data, seed=1)
    with pytest.raises(ValueError, match="loader state"):
        ld.load_state_dict({"kind": "torch", "config": {}, "epoch": 0, "batch": 1})
    ld.close()


@needs_ffcv
def test_missing_beton_says_what_to_run(tmp_path):
    save_pca(PCA, tmp_path / PCA_FILE)
    with pytest.raises(FileNotFoundError, match=r"export-ffcv --data .* --raw"):
        loader(tmp_path, mode="raw")
