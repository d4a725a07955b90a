"""prepare, pca-stats and verify on s3:// against a real S3 endpoint (moto's server on 127.0.0.1).

The tools talk HTTP to the server, in-process through click where the session's AWS variables
serve (it saves a torch import per call), as subprocesses for a kill and for other variables.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from s3_server import client, objects, tool_env, tree_bytes

from alexnet.pipeline.offline.synth import write_tree
from alexnet.pipeline.store.manifest import read_manifest
from alexnet.pipeline.store.storage import exists, join
from alexnet.tools.cli import main

TOOLS = [sys.executable, "-c", "from alexnet.tools.cli import main; main()"]
SHARD = "8"  # 3 classes × 8 train images → 3 train shards, 12 val images → 2 val shards


def tools(*args: str, endpoint: str, **env: str) -> subprocess.CompletedProcess:
    """`alexnet-tools ARGS` in a subprocess whose AWS variables point at `endpoint` (plus `env`)."""
    return subprocess.run([*TOOLS, *args], env=tool_env(endpoint, **env), capture_output=True, text=True, timeout=300)


def run(*args: str) -> Result:
    """`alexnet-tools ARGS` in this process (the s3_endpoint fixture has set the AWS variables)."""
    return CliRunner().invoke(main, list(args))


def prepare_args(source: Path, out: str | Path) -> list[str]:
    return ["prepare", "--imagenet-dir", str(source), "--out", str(out), "--shard-size", SHARD, "--workers", "1"]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src")
    write_tree(root, classes=3, train_per_class=8, val_per_class=4, seed=0)
    return root


@pytest.fixture(scope="module")
def local(source: Path, tmp_path_factory, s3_endpoint: str) -> Path:
    """The same source prepared (and pca-stats'd) on local disk: what every S3 output must equal."""
    out = tmp_path_factory.mktemp("local") / "out"
    for args in (prepare_args(source, out), ["pca-stats", "--data", str(out), "--workers", "1"]):
        done = run(*args)
        assert done.exit_code == 0, done.output
    return out


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The single `Error: …` line of a failed tool, with no traceback anywhere."""
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_prepare_pca_verify_on_s3_equal_local(source: Path, local: Path, s3_endpoint: str, s3_bucket: str) -> None:
    out = f"{s3_bucket}/alexnet-shards"
    done = run(*prepare_args(source, out))
    assert done.exit_code == 0, done.output
    done = run("pca-stats", "--data", out, "--workers", "1")
    assert done.exit_code == 0, done.output
    assert objects(s3_endpoint, out) == tree_bytes(local)  # shards, indexes, manifest and pca.json, byte for byte
    done = run("verify", "--data", out, "--workers", "1")
    assert done.exit_code == 0 and "all shards, indexes and samples check out" in done.output, done.output
    rerun = run(*prepare_args(source, out))  # lists, checks sizes and sha256, keeps all
    assert rerun.exit_code == 0 and "3 finished shards kept" in rerun.output, rerun.output
    assert objects(s3_endpoint, out) == tree_bytes(local)


def test_sigkill_during_prepare_then_rerun_gives_identical_objects(
    source: Path, local: Path, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    out = f"{s3_bucket}/p"
    proc = subprocess.Popen(
        [*TOOLS, *prepare_args(source, out)],
        env=tool_env(s3_endpoint, TMPDIR=str(tmp_path)),  # its staging folder outlives the SIGKILL: keep it here
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if exists(join(out, "manifest.json")) and read_manifest(out)["splits"]["train"]["shards"]:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not read_manifest(out)["complete"]  # killed mid-run: the manifest says so
    done = tools(*prepare_args(source, out), endpoint=s3_endpoint)
    assert done.returncode == 0, done.stderr
    expected = {k: v for k, v in tree_bytes(local).items() if k != "pca.json"}
    assert objects(s3_endpoint, out) == expected


def test_object_changed_since_the_manifest(source: Path, local: Path, s3_endpoint: str, s3_bucket: str) -> None:
    """verify names the changed object in one line; a re-run of prepare rebuilds it, back to the local bytes."""
    out = f"{s3_bucket}/p"
    assert run(*prepare_args(source, out)).exit_code == 0
    bucket, key = s3_bucket[len("s3://") :], "p/train/train-000001.tar"
    body = bytearray(client(s3_endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())
    body[-2000] ^= 0xFF  # same size, other bytes: only the sha256 tells
    client(s3_endpoint).put_object(Bucket=bucket, Key=key, Body=bytes(body))
    done = run("verify", "--data", out, "--workers", "1")
    assert f"{out}/train/train-000001.tar: sha256 differs from the manifest" in done.output
    assert done.exit_code == 1 and "problem(s) in" in done.output.splitlines()[-1]
    rerun = run(*prepare_args(source, out))
    assert rerun.exit_code == 0 and "1 rebuilt" in rerun.output, rerun.output
    assert objects(s3_endpoint, out) == {k: v for k, v in tree_bytes(local).items() if k != "pca.json"}


def test_missing_bucket_and_prefix_are_one_line(s3_bucket: str) -> None:
    done = run("verify", "--data", "s3://no-such-bucket/x")
    assert done.exit_code == 1 and done.output.count("\n") == 1, done.output
    assert "no bucket 'no-such-bucket'" in done.output and "create it or check the URL" in done.output
    done = run("pca-stats", "--data", f"{s3_bucket}/nothing-here")
    assert done.exit_code == 1 and done.output.count("\n") == 1, done.output
    assert f"{s3_bucket}/nothing-here/manifest.json: no manifest; run `alexnet-tools prepare" in done.output


def test_wrong_credentials_are_one_line(source: Path) -> None:
    """A server that checks keys (moto with auth on, its own process) refuses ours: one line naming the fix."""
    from s3_server import server_process

    with server_process(INITIAL_NO_AUTH_ACTION_COUNT="0") as endpoint:
        line = one_error_line(tools(*prepare_args(source, "s3://some-bucket/p"), endpoint=endpoint))
    assert "access denied" in line and "AWS_ACCESS_KEY_ID" in line


def test_endpoint_that_does_not_answer_is_bounded(source: Path) -> None:
    """Nothing listening, and a socket that accepts but never replies: a bounded retry, then one line."""
    import socket

    from ports import free_port

    refused = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    line = one_error_line(tools("verify", "--data", "s3://bucket/p", endpoint=refused))
    assert "does not answer (gave up after" in line and time.monotonic() - start < 60
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        line = one_error_line(tools("verify", "--data", "s3://bucket/p", endpoint=endpoint, ALEXNET_S3_TIMEOUT="1"))
    assert "does not answer" in line and time.monotonic() - start < 60


def test_export_ffcv_refuses_a_url_rather_than_taking_it_for_a_folder() -> None:
    done = run("export-ffcv", "--data", "s3://bucket/shards")
    assert done.exit_code == 1 and done.output.count("\n") == 1, done.output
    assert "s3://bucket/shards: export-ffcv writes its betons on local disk" in done.output
