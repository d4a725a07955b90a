"""pca-stats: agreement with plain numpy, recovery of a known covariance, subsets, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from imagenet_trees import make_prepared
from shard_data import tar_samples

from alexnet.pipeline.offline.pca import Moments, compute_pca, stats_from_moments
from alexnet.pipeline.store.pca_file import PCA_FILE, load_pca
from alexnet.pipeline.store.shards import decode_jpeg
from alexnet.tools.pca_stats import pca_stats


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return make_prepared(tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("out"))


def all_train_pixels(out: Path) -> np.ndarray:
    tars = sorted((out / "train").glob("*.tar"))
    return (
        np.concatenate([decode_jpeg(j).reshape(-1, 3) for t in tars for _, j, _ in tar_samples(t)]).astype(np.float64)
        / 255
    )


def test_cli_matches_plain_numpy(prepared: Path) -> None:
    result = CliRunner().invoke(pca_stats, ["--data", str(prepared), "--workers", "2"])
    assert result.exit_code == 0, result.output
    stats = load_pca(prepared / PCA_FILE)
    x = all_train_pixels(prepared)
    cov = np.cov(x, rowvar=False, bias=True)
    eigval, eigvec = np.linalg.eigh(cov)
    np.testing.assert_allclose(stats.mean, x.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.std, x.std(axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats.covariance, cov, rtol=1e-6)
    np.testing.assert_allclose(stats.eigval, eigval[::-1], rtol=1e-6)
    v = np.array(stats.eigvec)
    np.testing.assert_allclose(np.abs(v.T @ eigvec[:, ::-1]), np.eye(3), atol=1e-6)  # same axes, up to sign
    assert (stats.pixel_count, stats.image_count) == (len(x), 21)
    assert "eigval" in result.output


def test_moments_are_exact_integer_sums() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    m = Moments()
    m.add_image(rgb)
    x = rgb.reshape(-1, 3).astype(np.int64)
    assert (m.n, m.images) == (37 * 53, 1)
    assert (m.total == x.sum(axis=0)).all() and (m.cross == x.T @ x).all()


def test_same_result_with_any_number_of_workers(prepared: Path) -> None:
    assert compute_pca(prepared, workers=1) == compute_pca(prepared, workers=2)


def test_max_images_takes_an_evenly_spread_subset(prepared: Path) -> None:
    assert compute_pca(prepared, max_images=5, workers=2).image_count == 5
    assert compute_pca(prepared, max_images=500, workers=2).image_count == 21


def test_recovers_a_known_covariance_from_gaussian_pixels() -> None:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    true_eigval = np.array([0.02, 0.004, 0.001])
    true_cov = q @ np.diag(true_eigval) @ q.T
    mean = np.array([0.48, 0.46, 0.41])
    m = Moments()
    for _ in range(40):
        x = rng.multivariate_normal(mean, true_cov, size=128 * 128)
        m.add_image(np.round(x * 255).clip(0, 255).astype(np.uint8).reshape(128, 128, 3))
    stats = stats_from_moments(m, "none")
    quantisation = 1 / 12 / 255**2  # rounding to whole levels adds this variance per channel
    np.testing.assert_allclose(stats.covariance, true_cov + np.eye(3) * quantisation, atol=2e-4)
    np.testing.assert_allclose(stats.eigval, true_eigval + quantisation, rtol=0.03)
    v = np.array(stats.eigvec)
    np.testing.assert_allclose(v.T @ v, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(np.abs(v.T @ q), np.eye(3), atol=0.02)
    assert (v.sum(axis=0) <= 0).all()  # the sign convention
    np.testing.assert_allclose(stats.mean, mean, atol=1e-3)


def test_refuses_without_a_prepared_train_split(tmp_path: Path) -> None:
    result = CliRunner().invoke(pca_stats, ["--data", str(tmp_path)])
    assert result.exit_code == 1 and "run `alexnet-tools prepare" in result.output
    (tmp_path / "manifest.json").write_text(json.dumps({"complete": True, "splits": {"val": {"shards": []}}}))
    result = CliRunner().invoke(pca_stats, ["--data", str(tmp_path)])
    assert result.exit_code == 1 and "lists no train shards" in result.output
    (tmp_path / "manifest.json").write_text(json.dumps({"complete": False, "splits": {}}))
    result = CliRunner().invoke(pca_stats, ["--data", str(tmp_path)])
    assert result.exit_code == 1 and "prepare did not finish" in result.output and "re-run" in result.output
