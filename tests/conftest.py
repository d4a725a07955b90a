"""Fixtures shared across the test folders; the data helpers themselves are in `shard_data` and `imagenet_trees`."""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from s3_server import aws_env, new_bucket, threaded_server
from shard_data import tiny_prepared

from alexnet.pipeline.loaders.contract import default_workers

# glibc hands blocks of 128 KiB and more straight back to the kernel, so every CPU training step
# faulted its gradients and activations in again, zeroed page by page (2.7 million faults in a
# 20-step trainer run, 40% of its time). Kept in the heap, they are reused: set here, before the
# xdist workers start, so they and every process the tests start inherit it (docs/benchmarks.md,
# "Test suite"). Nothing here changes what a run computes.
os.environ.setdefault("GLIBC_TUNABLES", "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967295")


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker computes on its share of the cores (torch's threads here, and
    OMP_NUM_THREADS for the tools it starts): workers that each ran torch on every core ran the suite
    1.8× slower than one thread each (docs/benchmarks.md, "Test suite")."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        threads = max(1, default_workers() // workers)
        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synth → prepare → pca-stats on 3 classes (22 decodable train images, 12 val), shared read-only by the trainer and bench tests."""
    return tiny_prepared(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 API server (moto's ThreadedMotoServer) on 127.0.0.1 for the session, and the AWS variables pointing at it.

    The variables are set in this process's environment too, so in-process calls and the tool
    subprocesses the tests start reach the same server; both are put back afterwards.
    """
    with threaded_server() as endpoint:
        saved = {k: os.environ.get(k) for k in [*aws_env(endpoint), "AWS_PROFILE"]}
        os.environ.pop("AWS_PROFILE", None)
        os.environ.update(aws_env(endpoint))
        try:
            yield endpoint
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the session's server: `s3://NAME`."""
    return f"s3://{new_bucket(s3_endpoint)}"
