"""`alexnet-bench offline` end to end on a tiny tree: every rate measured, the JSON written."""

import json
from pathlib import Path

from click.testing import CliRunner
from imagenet_trees import make_flat_val, make_train, write_kaggle_csv

from alexnet.tools.bench import main


def test_bench_offline_command(tmp_path: Path) -> None:
    make_train(tmp_path / "src", per_class=4)
    labels = ["n01000001", "n02000003"]
    write_kaggle_csv(tmp_path / "src" / "LOC_val_solution.csv", make_flat_val(tmp_path / "src", labels), labels)
    args = [
        "offline",
        "--imagenet-dir",
        str(tmp_path / "src"),
        "--workers",
        "2",
        "--naive-images",
        "6",
        "--json",
        str(tmp_path / "o.json"),
    ]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    figures = json.loads((tmp_path / "o.json").read_text())
    assert figures["images"] == 14 and figures["workers"] == 2
    assert set(figures["images_per_s"]) == {"prepare", "naive_prepare", "pca_stats", "plain_decode"}
    assert all(v > 0 for v in figures["images_per_s"].values())
    assert "prepare / naive loop" in result.output and "pca-stats / plain decode" in result.output


def test_bench_offline_limit_and_work_dir(tmp_path: Path) -> None:
    """--limit N prepares only the first N images of each split, inside --work-dir, which is left empty."""
    make_train(tmp_path / "src", per_class=4)
    labels = ["n01000001", "n02000003", "n03000002"]
    write_kaggle_csv(tmp_path / "src" / "LOC_val_solution.csv", make_flat_val(tmp_path / "src", labels), labels)
    work = tmp_path / "work"
    args = ["offline", "--imagenet-dir", str(tmp_path / "src"), "--workers", "2", "--naive-images", "2"]
    args += ["--limit", "5", "--work-dir", str(work), "--json", str(tmp_path / "o.json")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.json").read_text())["images"] == 5 + 3
    assert work.is_dir() and not any(work.iterdir())
