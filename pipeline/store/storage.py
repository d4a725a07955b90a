"""Where the data side's files live: a local folder or an `s3://bucket/prefix` URL, behind one set of calls.

A *location* is a `Path` (local) or a `str` URL (`s3://bucket/key`); `parse_location` makes one
from what a user typed, and a string holding `://` is never taken for a local path. Every file
of the on-disk contract (manifest, indexes, pca.json, shards) is read and written through the
functions here, which dispatch on the kind of location:

- local: plain files; writes go through `atomic.py` (temporary name, fsync, rename);
- S3: boto3, configured as every AWS tool is (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, `AWS_REGION`,
  the credentials chain); nothing of it is stored in our files. An object is written by one PUT
  (or one multipart upload) of a finished local file, so it appears whole or not at all.

Failures of the store (credentials, a missing bucket, an endpoint that does not answer after
botocore's bounded retries with backoff) raise `StorageError`, one line naming the URL and what
to do. A missing object is a `FileNotFoundError`, as a missing file is.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from alexnet.pipeline.store.atomic import publish, write_atomic

Location = Path | str  # a str is an s3:// URL
S3_SCHEME = "s3://"
# Seconds to wait for a connection and for each read, and the attempts botocore makes (with its
# exponential backoff) before a fault is reported; ALEXNET_S3_TIMEOUT overrides both timeouts.
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0
MAX_ATTEMPTS = 4
CREDENTIALS_HINT = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"


class StorageError(Exception):
    """The object store refused or did not answer; the message is one line saying what to do."""


def is_url(location: object) -> bool:
    """True for a URL (anything holding `://`), which is never a local path."""
    return isinstance(location, str) and "://" in location


def parse_location(text: str | Path) -> Location:
    """`s3://bucket/prefix` stays a URL (trailing slashes dropped); anything else is a local Path."""
    if isinstance(text, Path) or "://" not in text:
        return Path(text)
    if not text.startswith(S3_SCHEME) or not text[len(S3_SCHEME) :].strip("/"):
        raise StorageError(f"{text}: not an s3://bucket/prefix URL (the only object store this reads)")
    return text.rstrip("/")


def join(base: Location, *parts: str) -> Location:
    """`base/part/...` for either kind of location."""
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *parts])
    return Path(base).joinpath(*parts)


def name(location: Location) -> str:
    """The last part of a location (a file name)."""
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def with_suffix(location: Location, suffix: str) -> Location:
    """The location with its name's last suffix replaced (`.tar` → `.idx`)."""
    if not is_url(location):
        return Path(location).with_suffix(suffix)
    stem, dot, ext = str(location).rpartition(".")
    return (stem if dot and "/" not in ext else str(location)) + suffix


def read_bytes(location: Location, start: int = 0, end: int | None = None) -> bytes:
    """The bytes [start, end) of a file or object (all of it by default)."""
    if is_url(location):
        return _s3().read(location, start, end)
    with open(location, "rb") as f:
        f.seek(start)
        return f.read(-1 if end is None else end - start)


def size_of(location: Location) -> int | None:
    """The size in bytes, or None when there is no such file or object."""
    if is_url(location):
        return _s3().size(location)
    path = Path(location)
    return path.stat().st_size if path.is_file() else None


def exists(location: Location) -> bool:
    return size_of(location) is not None


def list_folder(location: Location) -> dict[str, int]:
    """The files directly in a folder (objects directly under a prefix): name → size; empty when there is none."""
    if is_url(location):
        return _s3().list(location)
    path = Path(location)
    return {p.name: p.stat().st_size for p in sorted(path.iterdir()) if p.is_file()} if path.is_dir() else {}


def write_bytes(location: Location, data: bytes | str) -> None:
    """Write a whole file or object atomically: a reader sees the old one or the new one."""
    if is_url(location):
        _s3().put(location, data.encode() if isinstance(data, str) else data)
    else:
        Path(location).parent.mkdir(parents=True, exist_ok=True)  # as on S3, where folders are implied
        write_atomic(Path(location), data)


def publish_file(tmp: Path, location: Location) -> None:
    """Move a finished local file to `location`: a rename locally, one upload to S3 (then `tmp` goes)."""
    if is_url(location):
        _s3().upload(tmp, location)
        tmp.unlink()
    else:
        Path(location).parent.mkdir(parents=True, exist_ok=True)
        publish(tmp, Path(location))


def delete(location: Location) -> None:
    """Remove one file or object; nothing happens when it is not there."""
    if is_url(location):
        _s3().delete(location)
    else:
        Path(location).unlink(missing_ok=True)


def remove_tree(location: Location) -> None:
    """Remove a folder (every object under a prefix) and all it holds."""
    if is_url(location):
        _s3().delete_prefix(location)
    else:
        shutil.rmtree(location, ignore_errors=True)


def check_writable(location: Location) -> None:
    """Create a local folder (refusing one we may not write), or check the bucket answers to a listing."""
    if is_url(location):
        _s3().list(location)
        return
    path = Path(location)
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise PermissionError(13, os.strerror(13), str(path))


@contextmanager
def open_stream(location: Location) -> Iterator[IO[bytes]]:
    """A binary stream reading the file or object from its start (one GET for S3)."""
    if is_url(location):
        body = _s3().stream(location)
        try:
            yield body
        finally:
            body.close()
    else:
        with open(location, "rb") as f:
            yield f


def download(location: Location, dest: Path) -> None:
    """Copy a file or object to the local `dest`, which appears whole or not at all.

    The partial file is named per process, so ranks filling one cache side by side never write
    into each other's download (the last rename wins, with the same bytes).
    """
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        if is_url(location):
            _s3().download(location, tmp)
        else:
            shutil.copyfile(location, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def local_copies(locations: list[Location]) -> Iterator[list[Path]]:
    """Local paths for `locations`: the files themselves when local, else downloads into one temporary folder (same names), removed afterwards."""
    if not any(is_url(loc) for loc in locations):
        yield [Path(loc) for loc in locations]
        return
    with tempfile.TemporaryDirectory(prefix="alexnet-s3-") as tmp:
        paths = [Path(tmp) / name(loc) for loc in locations]
        for loc, path in zip(locations, paths):
            download(loc, path)
        yield paths


def _s3() -> _S3:
    """This process's S3 client (boto3 clients are not fork-safe, so a forked worker makes its own),
    made again when the AWS variables it was made from have changed."""
    global _client
    if _client is None or _client.made_for != _S3.identity():
        _client = _S3()
    return _client


_client: _S3 | None = None


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` → ("bucket", "a/b")."""
    bucket, _, key = url[len(S3_SCHEME) :].partition("/")
    return bucket, key


class _S3:
    """boto3 behind the calls above, with every botocore failure turned into one line."""

    def __init__(self) -> None:
        import boto3
        from botocore.config import Config

        timeout = os.environ.get("ALEXNET_S3_TIMEOUT")
        config = Config(
            connect_timeout=float(timeout or CONNECT_TIMEOUT),
            read_timeout=float(timeout or READ_TIMEOUT),
            retries={"mode": "standard", "total_max_attempts": MAX_ATTEMPTS},
        )
        self.made_for = self.identity()
        try:
            self.client = boto3.session.Session().client("s3", config=config)
        except Exception as e:  # ProfileNotFound, a malformed config file, no region for a URL endpoint
            raise StorageError(f"cannot set up the S3 client ({e}); check AWS_PROFILE and ~/.aws/config") from None
        self.endpoint = self.client.meta.endpoint_url

    @staticmethod
    def identity() -> tuple[object, ...]:
        """The process and the variables that choose the endpoint and the credentials."""
        names = ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_REGION", "ALEXNET_S3_TIMEOUT")
        return (os.getpid(), *(os.environ.get(n) for n in names))

    @contextmanager
    def _errors(self, url: str) -> Iterator[None]:
        """Translate botocore's exceptions for `url` into FileNotFoundError (no such object) or StorageError."""
        from boto3.exceptions import Boto3Error
        from botocore import exceptions as bx

        try:
            yield
        except bx.ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", ""))
            status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise self._no_bucket(url) from None
            if code in ("NoSuchKey", "404") or status == 404:
                raise FileNotFoundError(f"{url}: no such object") from None
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or status == 403:
                raise StorageError(
                    f"{url}: access denied by {self.endpoint} ({code}); check the credentials ({CREDENTIALS_HINT})"
                ) from None
            raise StorageError(f"{url}: {self.endpoint} answered {code or status}: {e}") from None
        except bx.NoCredentialsError:
            raise StorageError(f"{url}: no AWS credentials found; {CREDENTIALS_HINT}") from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError, bx.ConnectionClosedError):
            raise StorageError(
                f"{url}: {self.endpoint} does not answer (gave up after {MAX_ATTEMPTS} attempts); "
                "check AWS_ENDPOINT_URL and that the server is up, then re-run"
            ) from None
        except bx.BotoCoreError as e:
            raise StorageError(f"{url}: {e}") from None
        except Boto3Error as e:  # upload_file's S3UploadFailedError wraps the ClientError in its text
            raise StorageError(f"{url}: {e}; check the credentials and the bucket, then re-run") from None

    def _no_bucket(self, url: str) -> StorageError:
        bucket = split_url(url)[0]
        return StorageError(f"{url}: no bucket {bucket!r} at {self.endpoint}; create it or check the URL")

    def read(self, url: str, start: int, end: int | None) -> bytes:
        bucket, key = split_url(url)
        extra = {} if start == 0 and end is None else {"Range": f"bytes={start}-{'' if end is None else end - 1}"}
        if end is not None and end <= start:
            return b""
        with self._errors(url):
            return self.client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()

    def stream(self, url: str):
        bucket, key = split_url(url)
        with self._errors(url):
            return self.client.get_object(Bucket=bucket, Key=key)["Body"]

    def size(self, url: str) -> int | None:
        bucket, key = split_url(url)
        try:
            with self._errors(url):
                return int(self.client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except FileNotFoundError:
            self.list(url.rsplit("/", 1)[0])  # a HEAD's 404 carries no code: tell a missing bucket apart
            return None

    def list(self, url: str) -> dict[str, int]:
        bucket, key = split_url(url)
        prefix = key.rstrip("/") + "/" if key else ""
        found: dict[str, int] = {}
        try:
            with self._errors(url):
                pages = self.client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix, Delimiter="/"
                )
                for page in pages:
                    found.update({o["Key"][len(prefix) :]: int(o["Size"]) for o in page.get("Contents", [])})
        except FileNotFoundError:
            raise self._no_bucket(url) from None
        return dict(sorted(found.items()))

    def put(self, url: str, data: bytes) -> None:
        bucket, key = split_url(url)
        with self._errors(url):
            self.client.put_object(Bucket=bucket, Key=key, Body=data)

    def upload(self, path: Path, url: str) -> None:
        bucket, key = split_url(url)
        with self._errors(url):
            self.client.upload_file(str(path), bucket, key)

    def download(self, url: str, path: Path) -> None:
        bucket, key = split_url(url)
        with self._errors(url):
            self.client.download_file(bucket, key, str(path))

    def delete(self, url: str) -> None:
        bucket, key = split_url(url)
        with self._errors(url):
            self.client.delete_object(Bucket=bucket, Key=key)

    def delete_prefix(self, url: str) -> None:
        bucket, key = split_url(url)
        with self._errors(url):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key.rstrip("/") + "/")
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self.client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
