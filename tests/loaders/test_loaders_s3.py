"""Every loader from s3:// gives the batches it gives from the local copy; the cache's hits, bound and checks.

The server is moto's, in its own process here: DALI's `Pipeline.build()` holds the GIL while its S3
client waits for replies, so a server thread inside this process could never answer it (see
docs/design.md, "Object storage").
"""

import importlib.util
from pathlib import Path

import pytest
import torch
from s3_server import aws_env, client, new_bucket, server_process
from shard_data import write_prepared

from alexnet.pipeline.loaders import make_loader
from alexnet.pipeline.store.cache import CacheFull, cache_folder
from alexnet.pipeline.store.storage import StorageError

HAVE_FFCV = importlib.util.find_spec("ffcv") is not None
KINDS = ["dali", "torch"] + (["ffcv", "ffcv-raw"] if HAVE_FFCV else [])


@pytest.fixture(scope="module")
def endpoint():
    with server_process() as url, pytest.MonkeyPatch.context() as mp:
        for name, value in aws_env(url).items():
            mp.setenv(name, value)
        mp.delenv("AWS_PROFILE", raising=False)
        yield url


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    out = write_prepared(tmp_path_factory.mktemp("shards") / "out")
    if HAVE_FFCV:
        from alexnet.pipeline.offline.ffcv_export import export

        for mode in ("jpg", "raw"):
            export(out, mode, workers=2, announce=lambda line: None)
    return out


def upload(endpoint: str, folder: Path) -> str:
    """Every file of a local prepared folder into a fresh bucket; returns its s3:// URL."""
    bucket = new_bucket(endpoint)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client(endpoint).upload_file(str(path), bucket, f"shards/{path.relative_to(folder)}")
    return f"s3://{bucket}/shards"


@pytest.fixture(scope="module")
def remote(endpoint: str, local: Path) -> str:
    return upload(endpoint, local)


def epoch(kind: str, data, split: str = "train", **kw) -> list[tuple[torch.Tensor, ...]]:
    ld = make_loader(kind, data, split, 8, workers=1, seed=3, **kw)
    try:
        return list(ld)
    finally:
        ld.close()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", ["train", "val"])
def test_same_batches_from_s3_as_from_local(kind: str, split: str, local: Path, remote: str, tmp_path: Path) -> None:
    expected = epoch(kind, local, split)
    got = epoch(kind, remote, split, cache_dir=None if kind == "dali" else tmp_path / "cache")
    assert len(got) == len(expected) > 0
    for (x, y), (a, b) in zip(got, expected):
        assert torch.equal(y, b) and torch.equal(x, a)


def test_dali_through_the_cache_too(local: Path, remote: str, tmp_path: Path) -> None:
    expected = epoch("dali", local, "val")
    got = epoch("dali", remote, "val", cache_dir=tmp_path / "cache")
    assert all(torch.equal(x, a) and torch.equal(y, b) for (x, y), (a, b) in zip(got, expected))
    assert (cache_folder(tmp_path / "cache", remote) / "val" / "val-000000.tar").is_file()


def test_cache_hits_are_reused_across_runs(remote: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    epoch("torch", remote, "val", cache_dir=cache)
    tar = cache_folder(cache, remote) / "val" / "val-000000.tar"
    first = tar.stat().st_ino, tar.stat().st_mtime_ns
    epoch("torch", remote, "val", cache_dir=cache)
    assert tar.stat().st_ino == first[0]  # not fetched again (a fetch renames a new file into place)


def test_cache_stays_within_its_bound(endpoint: str, local: Path, remote: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    epoch("torch", remote, "val", cache_dir=cache)
    other = upload(endpoint, local)  # a second data set: the first one's files go to make room
    val_bytes = sum(p.stat().st_size for p in (local / "val").iterdir())
    epoch("torch", other, "val", cache_dir=cache, cache_max_bytes=val_bytes + 10_000)
    used = sum(p.stat().st_size for p in cache.rglob("*") if p.is_file())
    assert used <= val_bytes + 10_000 and not list(cache_folder(cache, remote).rglob("*.tar"))
    with pytest.raises(CacheFull, match="raise --cache-max-gb or stream with --loader dali"):
        epoch("torch", other, "train", cache_dir=cache, cache_max_bytes=val_bytes)


def test_changed_object_is_refused_by_the_cache(endpoint: str, local: Path, tmp_path: Path) -> None:
    url = upload(endpoint, local)
    bucket, key = url[len("s3://") :].split("/", 1)
    body = bytearray(client(endpoint).get_object(Bucket=bucket, Key=f"{key}/val/val-000001.tar")["Body"].read())
    body[700] ^= 0xFF
    client(endpoint).put_object(Bucket=bucket, Key=f"{key}/val/val-000001.tar", Body=bytes(body))
    with pytest.raises(StorageError, match=r"val-000001\.tar: its bytes differ from the manifest"):
        epoch("torch", url, "val", cache_dir=tmp_path / "cache")


def test_a_loader_reading_local_files_asks_for_a_cache(remote: str) -> None:
    with pytest.raises(StorageError, match="--loader torch reads shards from local disk: give --cache-dir"):
        epoch("torch", remote, "val")
