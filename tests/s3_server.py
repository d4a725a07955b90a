"""A real S3 API server on 127.0.0.1 for the tests (moto's server mode), and the environment that points tools at it.

Nothing is mocked in-process: the tools (run as subprocesses, or in-process through click) talk
HTTP to the server as they would to S3, configured only by the standard AWS variables.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import boto3
from ports import free_port

REGION = "us-east-1"


def aws_env(endpoint: str, key: str = "testing", secret: str = "testing") -> dict[str, str]:
    """The AWS variables a tool reads to reach `endpoint`; the user's own AWS files are hidden."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": key,
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }


def tool_env(endpoint: str, **overrides: str) -> dict[str, str]:
    """os.environ for a tool subprocess: the AWS variables for `endpoint`, then `overrides`; AWS_PROFILE dropped."""
    env = {k: v for k, v in os.environ.items() if k != "AWS_PROFILE"}
    return {**env, **aws_env(endpoint), **overrides}


@contextmanager
def threaded_server() -> Iterator[str]:
    """moto's ThreadedMotoServer on a free port of 127.0.0.1; yields its endpoint URL and stops it afterwards."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def server_process(**env: str) -> Iterator[str]:
    """moto's server as its own process (with extra environment, e.g. auth checks on), stopped afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"moto server did not start on port {port}")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@functools.cache
def client(endpoint: str):
    """A boto3 S3 client on `endpoint` with the tests' fake credentials (test setup and inspection only).

    One per endpoint and process: making one reads botocore's service descriptions again (about
    0.2 s); boto3's clients are thread-safe."""
    return boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing").client(
        "s3", endpoint_url=endpoint, region_name=REGION
    )


def new_bucket(endpoint: str) -> str:
    """Create a bucket with a fresh name; returns the name."""
    name = f"test-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def objects(endpoint: str, url: str) -> dict[str, bytes]:
    """Every object under the s3:// URL's prefix, by name relative to it."""
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    s3 = client(endpoint)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            found[o["Key"][len(prefix) :]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return dict(sorted(found.items()))


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file under a local folder, by relative name (the local counterpart of `objects`)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Gate:
    """A TCP relay in front of a server that can be shut (every connection cut, new ones refused) and opened again on the same port.

    It stands for the server stopping and coming back, with the server's objects kept.
    """

    def __init__(self, target: str) -> None:
        self.target = ("127.0.0.1", int(target.rsplit(":", 1)[1]))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.listener: socket.socket | None = None
        self.live: list[socket.socket] = []

    def open(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=True)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def shut(self) -> None:
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.close()
        for conn in self.live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.live.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client_side, _ = listener.accept()
            except OSError:
                return  # shut
            server_side = socket.create_connection(self.target)
            self.live += [client_side, server_side]
            for a, b in ((client_side, server_side), (server_side, client_side)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
