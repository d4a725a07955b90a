"""Checkpoint files are torch.save's zip without the records' CRC-32s, which torch.load never checks."""

import zipfile
from pathlib import Path

import torch

from alexnet.model.checkpoint import save_atomic


def test_a_checkpoint_has_no_crc32s_and_loads_back_equal(tmp_path: Path) -> None:
    obj = {"w": torch.randn(1000), "step": 3}
    before = torch.serialization.get_crc32_options()
    save_atomic(obj, tmp_path / "last.pt")
    assert torch.serialization.get_crc32_options() == before  # the process's setting is put back
    with zipfile.ZipFile(tmp_path / "last.pt") as z:
        records = [i for i in z.infolist() if "/data/" in i.filename]
    assert records and all(i.CRC == 0 for i in records)
    back = torch.load(tmp_path / "last.pt")
    assert torch.equal(back["w"], obj["w"]) and back["step"] == 3


def test_torch_load_does_not_check_crc32s(tmp_path: Path) -> None:
    """Why save_atomic writes none: a byte changed inside a tensor of a file saved with them (torch's default)
    loads without a word. Should torch.load start checking them, this fails, and the choice is to revisit."""
    path = tmp_path / "with-crc32s.pt"
    torch.save({"w": torch.full((1000,), 1.0)}, path)
    data = bytearray(path.read_bytes())
    at = data.index(torch.full((4,), 1.0).numpy().tobytes())
    data[at + 3] ^= 0x01  # the first element: 1.0 (0x3f800000) → 0.25 (0x3e800000)
    path.write_bytes(data)
    back = torch.load(path)["w"]
    assert back[0] != 1.0 and torch.equal(back[1:], torch.full((999,), 1.0))
