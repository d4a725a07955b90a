"""Fixtures shared across the test folders; the data helpers themselves are in `shard_data` and `imagenet_trees`."""

from pathlib import Path

import pytest
from shard_data import tiny_prepared


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """synth → prepare → pca-stats on 3 classes (22 decodable train images, 12 val), shared read-only by the trainer and bench tests."""
    return tiny_prepared(tmp_path_factory.mktemp("tiny"))
