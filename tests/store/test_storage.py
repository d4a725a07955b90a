"""The storage layer on a local folder and on a real S3 endpoint (moto's server on 127.0.0.1): the same calls, the same answers."""

from pathlib import Path

import click
import pytest
from s3_server import client, objects

from alexnet.pipeline.store import storage
from alexnet.pipeline.store.storage import StorageError
from alexnet.tools.options import DataLocation


@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path) -> storage.Location:
    """An empty folder, or an empty prefix of a fresh bucket."""
    if request.param == "local":
        return tmp_path / "root"
    return request.getfixturevalue("s3_bucket") + "/some/prefix"


def test_write_read_ranges_list_delete(root: storage.Location, tmp_path: Path) -> None:
    storage.check_writable(root)
    a = storage.join(root, "a.bin")
    storage.write_bytes(a, b"0123456789")
    assert storage.read_bytes(a) == b"0123456789"
    assert storage.read_bytes(a, 2, 5) == b"234" and storage.read_bytes(a, 7) == b"789"
    assert storage.size_of(a) == 10 and storage.size_of(storage.join(root, "none")) is None
    staged = tmp_path / "staged.tmp"
    staged.write_bytes(b"whole")
    storage.publish_file(staged, storage.join(root, "sub", "b.tar"))
    assert not staged.exists()
    assert storage.list_folder(root) == {"a.bin": 10} and storage.list_folder(storage.join(root, "sub")) == {"b.tar": 5}
    with storage.local_copies([storage.join(root, "sub", "b.tar")]) as (local,):
        assert local.read_bytes() == b"whole"
    with storage.open_stream(a) as f:
        assert f.read(4) == b"0123"
    storage.delete(a)
    storage.delete(a)  # deleting what is not there is no error
    storage.remove_tree(storage.join(root, "sub"))
    assert storage.list_folder(root) == {} and storage.list_folder(storage.join(root, "sub")) == {}
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(a)


def test_an_object_is_one_put(s3_endpoint: str, s3_bucket: str) -> None:
    """What the server holds is exactly what was written, under the key the URL names."""
    storage.write_bytes(f"{s3_bucket}/p/manifest.json", "{}\n")
    assert objects(s3_endpoint, f"{s3_bucket}/p") == {"manifest.json": b"{}\n"}
    bucket = s3_bucket[len("s3://") :]
    assert client(s3_endpoint).head_object(Bucket=bucket, Key="p/manifest.json")["ContentLength"] == 3


def test_a_url_is_never_a_local_path() -> None:
    assert storage.parse_location("s3://bucket/pre/fix/") == "s3://bucket/pre/fix"
    assert storage.parse_location("folder/s3") == Path("folder/s3")
    assert storage.join("s3://bucket", "train", "x.tar") == "s3://bucket/train/x.tar"
    assert storage.with_suffix("s3://bucket/p.q/train-000001.tar", ".idx") == "s3://bucket/p.q/train-000001.idx"
    for bad in ("gs://bucket/x", "s3://", "http://host/x"):
        with pytest.raises(StorageError, match="s3://bucket/prefix"):
            storage.parse_location(bad)
    assert DataLocation(exists=True).convert("s3://bucket/x", None, None) == "s3://bucket/x"
    with pytest.raises(click.BadParameter, match="not an s3://bucket/prefix URL"):
        DataLocation().convert("gs://bucket/x", None, None)


def test_missing_bucket_is_one_line(s3_endpoint: str) -> None:
    with pytest.raises(StorageError, match=r"no bucket 'no-such-bucket' at http://127\.0\.0\.1:\d+; create it"):
        storage.size_of("s3://no-such-bucket/p/manifest.json")
    with pytest.raises(StorageError, match="no bucket 'no-such-bucket'"):
        storage.list_folder("s3://no-such-bucket/p")
