"""`export-ffcv` and the FFCV loader, held to the shard contents, the batch contract and the spec.

Tiny synthetic shards as in test_loaders.py: every sample has its own label (train 0..47 in
shard order, so a training label is also the sample's id; val 100..120).

Decoder tolerance, in pixel levels (0–255) before normalisation: `raw` betons hold Pillow's
pixels, so only float rounding is allowed. From `jpg` betons FFCV decodes with libjpeg-turbo's
fast integer IDCT (TJFLAG_FASTDCT, fixed in libffcv) where Pillow uses the accurate one: on
these noisy q90 images that differs by about one level on average and a handful at most
(measured 1.0 and 6), so 8 anywhere and 1.5 on average are allowed.
"""

import io
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy.stats import chisquare

from alexnet.pipeline import augment
from alexnet.pipeline.files import TMP_SUFFIX
from alexnet.pipeline.image import encode_jpeg
from alexnet.pipeline.loaders import LoaderConfig
from alexnet.pipeline.manifest import read_manifest, write_manifest
from alexnet.pipeline.paper import MAX_CROP_OFFSET, PCA_ALPHA_STD
from alexnet.pipeline.pca import PCA_FILE, PcaStats, save_pca
from alexnet.pipeline.shards import ShardWriter, iter_samples, shard_name

TRAIN_SHARDS = [20, 20, 8]  # 48 samples; the last shard short
VAL_SHARDS = [16, 5]  # 21 samples: odd, so ranks and batches never divide it
VAL_LABEL0 = 100
BATCH = 8
QUALITY = 90
MODES = ["jpg", "raw"]
TOLERANCE = {"raw": (1e-3, 1e-4), "jpg": (8.0, 1.5)}  # (max, mean) levels; see the docstring
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
PCA = PcaStats(
    mean=[0.48, 0.46, 0.41], std=[0.23, 0.22, 0.225], covariance=np.eye(3).tolist(),
    eigval=[0.2175, 0.0188, 0.0045], eigvec=EIGVEC.tolist(), pixel_count=1, image_count=1, manifest_sha256="",
)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
needs_ffcv = pytest.mark.skipif(
    __import__("importlib").util.find_spec("ffcv") is None, reason="FFCV is not installed (pip install -e '.[ffcv]')"
)


def textured(rng: np.random.Generator, i: int) -> np.ndarray:
    """A 256×256 image with a per-image gradient and noise, so a crop one pixel off looks different."""
    yy, xx = np.mgrid[0:256, 0:256]
    base = np.stack([(xx * 3 + i * 7) % 256, (yy * 5 + i * 11) % 256, ((xx + yy) * 2 + i) % 256], -1)
    return np.clip(0.7 * base + rng.normal(0, 20, (256, 256, 3)), 0, 255).astype(np.uint8)


def write_split(out: Path, split: str, sizes: list[int], first_label: int, rng: np.random.Generator) -> None:
    (out / split).mkdir(parents=True)
    label = first_label
    for n, size in enumerate(sizes):
        writer = ShardWriter(out / split / shard_name(split, n))
        for _ in range(size):
            writer.add(f"img{label:04d}", encode_jpeg(Image.fromarray(textured(rng, label)), QUALITY), label)
            label += 1
        writer.close()


def write_prepared(out: Path, splits: dict[str, tuple[list[int], int]]) -> None:
    """Shards, pca.json and the few manifest entries export-ffcv reads, as `prepare` would leave them."""
    rng = np.random.default_rng(0)
    for split, (sizes, first_label) in splits.items():
        write_split(out, split, sizes, first_label, rng)
    save_pca(PCA, out / PCA_FILE)
    write_manifest(out, {"format_version": 1, "complete": True, "settings": {"size": 256, "quality": QUALITY}, "splits": {}})


def export_cli(*args: str):
    from alexnet.tools.export_ffcv import export_ffcv

    return CliRunner().invoke(export_ffcv, list(args))


EXPORT_OUTPUT: dict[str, str] = {}  # what the command printed, by mode


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    write_prepared(out, {"train": (TRAIN_SHARDS, 0), "val": (VAL_SHARDS, VAL_LABEL0)})
    for mode, extra in (("jpg", []), ("raw", ["--raw"])):
        result = export_cli("--data", str(out), "--workers", "2", *extra)
        assert result.exit_code == 0, result.output
        EXPORT_OUTPUT[mode] = result.stdout  # without FFCV's progress bar (stderr)
    return out


@pytest.fixture(scope="module")
def stored(data) -> dict[str, list[tuple[bytes, int]]]:
    """Each split's (JPEG bytes, label) in tar name order."""
    return {
        split: [(bytes(jpeg), label) for tar in sorted((data / split).glob("*.tar")) for _, jpeg, label in iter_samples(tar)]
        for split in ("train", "val")
    }


@pytest.fixture(scope="module")
def decoded(stored) -> dict[int, torch.Tensor]:
    """Every stored image decoded by Pillow (the reference decoder), by label."""
    return {
        label: torch.from_numpy(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).copy())
        for samples in stored.values()
        for jpeg, label in samples
    }


def loader(data: Path, split: str = "train", mode: str = "jpg", **kw):
    """An FfcvLoader with make_loader's defaults (augment and drop on train, partial otherwise)."""
    from alexnet.pipeline.ffcv_loader import FfcvLoader

    train = kw.pop("train", split == "train")
    config = LoaderConfig(
        data=data, split=split, batch_size=kw.pop("batch_size", BATCH), device=torch.device(kw.pop("device", "cpu")),
        train=train, last_batch=kw.pop("last_batch", "drop" if train else "partial"), workers=kw.pop("workers", 2), **kw,
    )
    return FfcvLoader(config, mode=mode)


def run(data: Path, split: str = "train", **kw) -> list[tuple]:
    """One epoch of a fresh loader, as a list of its batches."""
    ld = loader(data, split, **kw)
    try:
        return list(ld)
    finally:
        ld.close()


def labels_of(batches) -> list[int]:
    return [int(v) for b in batches for v in b[1]]


def assert_decoder_close(actual: torch.Tensor, expected: torch.Tensor, what: str, mode: str) -> None:
    """Normalised images equal up to the decoder tolerance (levels scaled by the normalisation)."""
    largest, average = TOLERANCE[mode]
    levels = (actual - expected).abs() * 255 * torch.tensor(PCA.std).view(3, 1, 1)
    assert levels.max() <= largest, f"{what}: max {levels.max():.3f} levels"
    assert levels.mean() <= average, f"{what}: mean {levels.mean():.3f} levels"


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
        "path": "ffcv/train.beton", "mode": "jpg", "samples": 48, "bytes": (data / "ffcv/train.beton").stat().st_size,
        "shards": 3, "shard_bytes": sum(t.stat().st_size for t in (data / "train").glob("*.tar")), "quality": QUALITY,
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
    from alexnet.pipeline.ffcv_export import ExportError, export

    (tmp_path / "train").mkdir()
    writer = ShardWriter(tmp_path / "train" / shard_name("train", 0))
    png = io.BytesIO()
    Image.new("RGB", (256, 256)).save(png, "PNG")
    for i, image in enumerate([encode_jpeg(Image.new("RGB", (256, 256)), QUALITY), png.getvalue()]):
        writer.add(f"img{i}", image, i)
    writer.close()
    write_manifest(tmp_path, {"complete": True, "settings": {"quality": QUALITY}, "splits": {}})
    with pytest.raises(ExportError, match="sample 1: .*not an RGB JPEG"):
        export(tmp_path, workers=2, announce=lambda line: None)
    assert not list((tmp_path / "ffcv").iterdir())
    assert "ffcv" not in read_manifest(tmp_path)


def test_missing_ffcv_says_what_and_how_to_install(monkeypatch):
    from alexnet.pipeline.ffcv_export import FfcvMissing, import_ffcv

    monkeypatch.setitem(sys.modules, "ffcv.fields", None)
    with pytest.raises(FfcvMissing) as e:
        import_ffcv()
    assert "ffcv.fields" in str(e.value)
    assert "apt-get install pkg-config libturbojpeg0-dev libopencv-dev" in str(e.value)
    assert "pip install -e '.[ffcv]'" in str(e.value)


# --- the loader ------------------------------------------------------------------------------


@needs_ffcv
def test_batch_contract(data):
    train = loader(data)
    assert len(train) == 48 // BATCH
    batches = list(train)
    train.close()
    assert len(batches) == len(train)
    for images, labels in batches:
        assert images.shape == (BATCH, 3, 224, 224) and images.dtype == torch.float32 and images.device.type == "cpu"
        assert labels.shape == (BATCH,) and labels.dtype == torch.int64
        assert 0 <= labels.min() and labels.max() < 48
    val = run(data, "val")
    assert [len(b[1]) for b in val] == [8, 8, 5]
    assert all(b[0].shape[1:] == (3, 224, 224) and b[0].dtype == torch.float32 for b in val)
    tens = run(data, "val", ten_crop=True, batch_size=16)
    assert [tuple(b[0].shape) for b in tens] == [(16, 10, 3, 224, 224), (5, 10, 3, 224, 224)]
    assert labels_of(tens) == list(range(VAL_LABEL0, VAL_LABEL0 + 21))


@needs_ffcv
@pytest.mark.parametrize("mode", MODES)
def test_validation_equals_reference(data, decoded, mode):
    for images, labels in run(data, "val", mode=mode):
        for image, label in zip(images, labels.tolist()):
            assert_decoder_close(image, augment.val_sample(decoded[label], PCA), f"centre crop of {label}", mode)
    images, labels = run(data, "val", mode=mode, ten_crop=True, batch_size=4)[0]
    for crops, label in zip(images, labels.tolist()):
        assert_decoder_close(crops, augment.ten_crop_sample(decoded[label], PCA), f"ten crops of {label}", mode)


@needs_ffcv
@pytest.mark.parametrize("mode", MODES)
def test_training_sample_equals_reference_for_its_draws(data, decoded, mode):
    """The loader reports each sample's draws; the reference recomputes the sample from them."""
    for images, labels, draws in run(data, mode=mode, with_draws=True):
        for i, label in enumerate(labels.tolist()):
            expected = augment.train_sample(
                decoded[label], int(draws["dx"][i]), int(draws["dy"][i]), bool(draws["flip"][i]), draws["alpha"][i], PCA
            )
            assert_decoder_close(images[i], expected, f"training sample {label}", mode)


@needs_ffcv
def test_free_draws_have_the_spec_distribution(data):
    """Ten epochs (480 samples): offsets uniform over 0..32, flips fair, lighting shift with the PCA covariance."""
    ld = loader(data, with_draws=True, seed=7)
    draws = []
    for epoch in range(10):
        ld.set_epoch(epoch)
        draws += [d for _, _, d in ld]
    ld.close()
    offsets = torch.cat([torch.cat([d["dx"], d["dy"]]) for d in draws]).numpy()
    flips = torch.cat([d["flip"] for d in draws]).double().numpy()
    alpha = torch.cat([d["alpha"] for d in draws])
    n = len(flips)
    assert n == 480 and offsets.min() >= 0 and offsets.max() <= MAX_CROP_OFFSET
    assert chisquare(np.bincount(offsets, minlength=MAX_CROP_OFFSET + 1)).pvalue > 1e-3
    assert abs(flips.mean() - 0.5) < 4 * 0.5 / np.sqrt(n)
    shift = augment.lighting_shift(alpha, PCA).double().numpy()
    expected = EIGVEC @ np.diag((PCA_ALPHA_STD * np.array(PCA.eigval)) ** 2) @ EIGVEC.T
    assert np.all(np.abs(shift.mean(axis=0)) < 4 * np.sqrt(np.diag(expected) / n))
    assert np.linalg.norm(np.cov(shift.T) - expected) < 0.25 * np.linalg.norm(expected)


@needs_ffcv
def test_draw_generator_over_many_samples():
    """The keyed generator alone, on 100,000 samples: uniform offsets, fair flips, α ~ N(0, 0.1²) independent."""
    from alexnet.pipeline.ffcv_loader import train_draws

    d = train_draws(12345, np.arange(100_000))
    assert chisquare(np.bincount(np.concatenate([d["dx"], d["dy"]]), minlength=MAX_CROP_OFFSET + 1)).pvalue > 1e-3
    assert abs(d["flip"].mean() - 0.5) < 4 * 0.5 / np.sqrt(100_000)
    assert np.allclose(d["alpha"].mean(axis=0), 0, atol=4 * PCA_ALPHA_STD / np.sqrt(100_000))
    assert np.allclose(np.cov(d["alpha"].T), PCA_ALPHA_STD**2 * np.eye(3), atol=0.05 * PCA_ALPHA_STD**2)
    assert np.corrcoef(d["dx"], d["dy"])[0, 1] < 0.02


@needs_ffcv
def test_draws_depend_on_key_and_sample_only(data):
    """A sample's draws are the same whatever its batch, position or rank; another key changes them."""
    from alexnet.pipeline.ffcv_loader import train_draws

    ids = np.array([3, 17, 40])
    forward, backward = train_draws(99, ids), train_draws(99, ids[::-1])
    assert all(np.array_equal(forward[k], backward[k][::-1]) for k in forward)
    assert not np.array_equal(train_draws(100, ids)["alpha"], forward["alpha"])

    def by_label(batches):
        return {int(l): (int(d["dx"][i]), int(d["dy"][i]), bool(d["flip"][i])) for _, ls, d in batches for i, l in enumerate(ls)}

    one = by_label(run(data, with_draws=True, seed=2, last_batch="partial"))
    two = {}
    for rank in (0, 1):
        two |= by_label(run(data, with_draws=True, seed=2, last_batch="partial", rank=rank, world_size=2))
    assert one == two


@needs_ffcv
@pytest.mark.parametrize("split, last_batch", [("train", "partial"), ("train", "drop"), ("val", "partial")])
def test_two_ranks_split_the_data(data, split, last_batch):
    per_rank = [labels_of(run(data, split, rank=r, world_size=2, last_batch=last_batch, seed=3)) for r in (0, 1)]
    everything = set(range(48)) if split == "train" else set(range(VAL_LABEL0, VAL_LABEL0 + 21))
    assert not set(per_rank[0]) & set(per_rank[1])
    assert all(len(set(p)) == len(p) for p in per_rank)
    if last_batch == "partial":
        assert set(per_rank[0]) | set(per_rank[1]) == everything
    else:
        assert len(per_rank[0]) == len(per_rank[1]) == (48 // 2) // BATCH * BATCH


@needs_ffcv
def test_seed_and_epoch_decide_the_batches(data):
    first = run(data, seed=5, epoch=1)
    again = run(data, seed=5, epoch=1)
    other_epoch = run(data, seed=5, epoch=2)
    for (a, la), (b, lb) in zip(first, again):
        assert torch.equal(la, lb) and torch.equal(a, b)
    assert labels_of(first) != labels_of(other_epoch)
    assert sorted(labels_of(first)) == sorted(labels_of(other_epoch)) == list(range(48))


def ffcv_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if type(t).__name__ == "EpochIterator" and t.is_alive()]


@needs_ffcv
def test_resume_mid_epoch_continues_exactly(data):
    uninterrupted = run(data, seed=11, epoch=3)
    ld = loader(data, seed=11)
    ld.set_epoch(3)
    head = []
    for batch in ld:
        head.append(batch)
        if len(head) == 2:
            break
    state = pickle.loads(pickle.dumps(ld.state_dict()))
    ld.close()
    assert not ffcv_threads()
    assert state["epoch"] == 3 and state["batch"] == 2
    resumed = loader(data, seed=11)
    resumed.load_state_dict(state)
    tail = list(resumed)
    resumed.close()
    assert len(head) + len(tail) == len(uninterrupted)
    for (a, la), (b, lb) in zip(head + tail, uninterrupted):
        assert torch.equal(la, lb) and torch.equal(a, b)


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
def test_finished_epoch_state_resumes_to_nothing(data):
    ld = loader(data, seed=1)
    list(ld)
    state = ld.state_dict()
    ld.close()
    resumed = loader(data, seed=1)
    resumed.load_state_dict(state)
    assert list(resumed) == []
    resumed.set_epoch(state["epoch"] + 1)
    assert len(list(resumed)) == len(resumed)
    resumed.close()


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


@cuda
@pytest.mark.cuda
@needs_ffcv
def test_cuda_batches_match_reference(data, decoded):
    """FFCV decodes and crops on the CPU, ToDevice copies the uint8 crops, the device step runs on the GPU."""
    for images, labels, draws in run(data, device="cuda", with_draws=True):
        assert images.device.type == "cuda" and labels.device.type == "cuda" and images.dtype == torch.float32
        for i, label in enumerate(labels.tolist()):
            expected = augment.train_sample(
                decoded[label], int(draws["dx"][i]), int(draws["dy"][i]), bool(draws["flip"][i]), draws["alpha"][i], PCA
            )
            assert_decoder_close(images[i].cpu(), expected, f"training sample {label} on the GPU", "jpg")
    for images, labels in run(data, "val", device="cuda", ten_crop=True, batch_size=4):
        for crops, label in zip(images.cpu(), labels.tolist()):
            assert_decoder_close(crops, augment.ten_crop_sample(decoded[label], PCA), f"ten crops of {label} on the GPU", "jpg")
