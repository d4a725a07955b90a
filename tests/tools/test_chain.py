"""The offline chain through the `alexnet-tools` group: synth → prepare → pca-stats → verify."""

from pathlib import Path

from click.testing import CliRunner
from shard_data import tar_samples

from alexnet.pipeline.store.manifest import read_manifest
from alexnet.pipeline.store.shards import decode_jpeg
from alexnet.tools.cli import main


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_synth_oddities_end_as_rgb_or_in_quarantine(tmp_path: Path) -> None:
    src, out = tmp_path / "ilsvrc", tmp_path / "out"
    invoke("synth", "--out", str(src), "--classes", "6", "--train-per-class", "5", "--val-per-class", "2")
    oddities = dict(line.split() for line in (src / "SYNTH_ODDITIES.txt").read_text().splitlines())
    assert set(oddities.values()) == {"png", "cmyk", "grayscale", "progressive", "empty", "not_an_image"}

    summary = invoke("prepare", "--imagenet-dir", str(src), "--out", str(out), "--shard-size", "8", "--workers", "2")
    assert "train: 28 written, 2 quarantined" in summary and "val: 12 written, 0 quarantined" in summary
    m = read_manifest(out)
    quarantined = {q["path"] for q in m["splits"]["train"]["quarantine"]}
    assert quarantined == {p for p, kind in oddities.items() if kind in ("empty", "not_an_image")}
    stored = {
        key: decode_jpeg(jpeg).shape
        for tar in sorted((out / "train").glob("*.tar"))
        for key, jpeg, _ in tar_samples(tar)
    }
    for path, kind in oddities.items():
        if kind not in ("empty", "not_an_image"):
            assert stored[Path(path).stem] == (256, 256, 3), kind
    assert sum(m["splits"]["train"]["class_counts"]) == 28
    assert all(c["name"] for c in m["classes"])  # names from LOC_synset_mapping.txt

    assert "eigval" in invoke("pca-stats", "--data", str(out), "--workers", "2")
    assert "check out" in invoke("verify", "--data", str(out), "--workers", "2")
