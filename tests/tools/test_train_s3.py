"""alexnet-train on s3:// with DALI streaming: the store stopping mid-run is one line with last.pt kept, and --resume finishes once it is back.

moto runs as its own process (DALI's `build()` holds the GIL, docs/design.md "Object storage");
a relay in front of it stands for the server going away and coming back with its objects.
"""

import subprocess
import sys
import time
from pathlib import Path

from interrupt import logged_step
from s3_server import Gate, client, new_bucket, server_process, tool_env


def train(data: str, run: Path, endpoint: str, *extra: str) -> subprocess.Popen:
    """--epochs 2 (5 steps each) with DALI reading `data` through `endpoint`: the reader needs the store again
    after its first fill, whatever that fill took in."""
    cmd = [sys.executable, "-m", "alexnet.tools.train", "--data", data, "--loader", "dali", "--device", "cpu"]
    cmd += ["-b", "4", "-j", "1", "--epochs", "2", "--log-every", "1", "--run-dir", str(run), *extra]
    return subprocess.Popen(cmd, env=tool_env(endpoint), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_store_stopping_mid_run_then_resume(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with server_process() as endpoint:
        bucket = new_bucket(endpoint)
        for path in sorted(tiny_data.rglob("*")):
            if path.is_file():
                client(endpoint).upload_file(str(path), bucket, f"shards/{path.relative_to(tiny_data)}")
        data = f"s3://{bucket}/shards"
        gate = Gate(endpoint)
        gate.open()
        proc = train(data, run, gate.url)
        deadline = time.monotonic() + 300
        while proc.poll() is None and logged_step(run) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        gate.shut()  # the server stops answering, mid-epoch 0
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, out + err
        assert "Traceback" not in err, err
        (line,) = [x for x in err.splitlines() if x.startswith("Error:")]
        assert f"{data}: reading the" in line and "continue with --resume" in line and "last.pt" in line
        assert (run / "last.pt").is_file()

        gate.open()  # back, with the same objects
        proc = train(data, run, gate.url, "--resume", str(run), "--epochs", "1")  # the rest of epoch 0 is enough
        out, err = proc.communicate(timeout=300)
        gate.shut()
    assert proc.returncode == 0, err
    assert "stopped at epoch 1, step 5" in out


def test_torch_loader_trains_from_the_cache(tiny_data: Path, s3_endpoint: str, s3_bucket: str, tmp_path: Path) -> None:
    """--loader torch on s3:// asks for --cache-dir in one line; given one, it trains from the fetched copy."""
    from click.testing import CliRunner

    from alexnet.tools.train import main

    bucket = s3_bucket[len("s3://") :]
    for path in sorted(tiny_data.rglob("*")):
        if path.is_file():
            client(s3_endpoint).upload_file(str(path), bucket, f"shards/{path.relative_to(tiny_data)}")
    args = ["--data", f"{s3_bucket}/shards", "--loader", "torch", "--device", "cpu", "-b", "4", "-j", "0"]
    args += ["--max-steps", "2", "--lr-schedule", "step", "--run-dir"]
    refused = CliRunner().invoke(main, [*args, str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "give --cache-dir DIR" in refused.output.splitlines()[-1], refused.output
    cache = tmp_path / "cache"
    done = CliRunner().invoke(main, [*args, str(tmp_path / "run"), "--cache-dir", str(cache)])
    assert done.exit_code == 0, done.output
    assert (tmp_path / "run" / "last.pt").is_file()
    assert sorted(p.name for p in (cache / bucket / "shards" / "train").glob("*.tar")) == sorted(
        p.name for p in (tiny_data / "train").glob("*.tar")
    )
