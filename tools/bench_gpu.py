"""`make bench-gpu` (`scripts/bench-gpu.sh`): every GPU figure in one budgeted run, written as it goes.

The shell script finds a Python with a CUDA torch (installing only what is missing) and runs this
module. It plans the runs for BENCH_MINUTES and prints the plan with its estimate, makes (or reuses)
a synthetic ILSVRC-shaped set just large enough for the plan, then runs each stage's commands
(`pytest -m cuda`, `alexnet-bench train`, `alexnet-bench loaders`) as child processes, each with a
timeout cut from what is left of the budget. A run that fails or times out is recorded with its exit
code and last lines, and the next one starts. After every run `bench-gpu.json` and `bench-gpu.md`
are rewritten whole; `bench-gpu.png` follows at the end. `--dry-run` (or DEVICE=cpu) does the same on
the CPU with tiny sizes, so that the plumbing is tested where there is no GPU; its figures are
labelled as a dry run, never as GPU figures.
"""

from __future__ import annotations

import collections
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import click

from alexnet.model.train import TrainConfig
from alexnet.pipeline.bench.charts import bar_chart
from alexnet.pipeline.loaders.contract import default_workers
from alexnet.pipeline.store.atomic import write_atomic

STAGES = ("cuda-tests", "ceiling", "loaders", "train", "dali-sweep")
LOADERS = ("dali", "torch", "ffcv")
HW_DECODER_LOADS = (0.0, 0.65, 1.0)
TAIL_LINES = 20
TESTS = Path(__file__).resolve().parents[1] / "tests"  # the checkout's tests (an editable install's)
OUTPUT_RESERVE_S = 10.0  # kept back from the budget for writing the three files at the end

# Planning figures, not results: seconds a child needs to start (imports, CUDA context, cuDNN's
# autotuning, the loader's first fill), assumed rates of the loop and of a loader, and the CPU
# seconds per image of making the data set (synth, prepare, export, measured on a 2-core EPYC).
# The timeouts, not these guesses, keep the run inside the budget.
START_S = {"cuda": 15.0, "cpu": 5.0}
TRAIN_RATE = {"cuda": 1500.0, "cpu": 10.0}
LOADER_RATE = {"cuda": 1500.0, "cpu": 60.0}
CUDA_TESTS_S = {"cuda": 90.0, "cpu": 10.0}
COMPILE_S = 90.0
PILLOW_RATE_PER_CORE = 300.0
DATA_CPU_S_PER_IMAGE = {"synth": 0.02, "prepare": 0.008, "ffcv": 0.008}


@dataclass(frozen=True)
class Sizes:
    """How big everything is: the batch, the timed steps (whole log intervals), the data set."""

    batch: int
    log_every: int
    warmup: int  # steps
    steps: int  # timed steps
    loader_batches: int
    loader_warmup: int
    ceiling_batches: tuple[int, ...]
    compile: bool
    hw_decoder_loads: tuple[float, ...]
    classes: int
    val_per_class: int = 1

    @property
    def train_images(self) -> int:
        """Train samples one epoch must hold: every timed step inside it (and 2% for quarantined oddities)."""
        return math.ceil(self.batch * (self.warmup + self.steps) * 1.02) + self.classes

    @property
    def train_per_class(self) -> int:
        return math.ceil(self.train_images / self.classes)


DRY_SIZES = Sizes(2, 1, 0, 1, 2, 1, (2,), False, (0.65,), classes=2, val_per_class=1)


def gpu_sizes(intervals: int) -> Sizes:
    """The GPU plan with `intervals` timed log intervals of alexnet-train's own length after one warm-up interval."""
    log_every = TrainConfig.log_every
    return Sizes(
        batch=128,
        log_every=log_every,
        warmup=log_every,
        steps=intervals * log_every,
        loader_batches=intervals * log_every,
        loader_warmup=10,
        ceiling_batches=(128, 256, 512),
        compile=True,
        hw_decoder_loads=HW_DECODER_LOADS,
        classes=100,
    )


@dataclass
class Run:
    """One child process: its stage, command line, estimate and, once run, its record."""

    name: str
    stage: str
    argv: list[str]
    estimate_s: float
    priority: int
    json_path: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "alexnet.tools.bench", *args]


def make_runs(sizes: Sizes, device: str, loaders: list[str], data: Path, runs_dir: Path) -> list[Run]:
    """Every run of every stage, in the order they execute; `priority` says which the budget keeps first."""
    s, start = sizes, START_S[device]
    total = s.warmup + s.steps
    timing = ["--log-every", str(s.log_every), "--warmup", str(s.warmup), "--steps", str(s.steps)]
    common = ["--data", str(data), "--device", device]
    ceiling_s = lambda b: total * b / TRAIN_RATE[device]  # noqa: E731
    loader_s = (s.loader_batches + s.loader_warmup) * s.batch / LOADER_RATE[device]
    pillow_s = s.batch * s.loader_batches / (PILLOW_RATE_PER_CORE * default_workers())
    pos = {k: i for i, k in enumerate(loaders)}
    pytest = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(TESTS)]
    runs = [Run("cuda-tests", "cuda-tests", pytest, CUDA_TESTS_S[device], 7)]
    for i, b in enumerate(s.ceiling_batches):
        name = f"ceiling-b{b}"
        argv = bench_cmd("train", *common, "--ceiling-only", "-b", str(b), *timing)
        runs.append(Run(name, "ceiling", argv, start + ceiling_s(b), 0 if i == 0 else 20 + i))
    if s.compile:
        b = s.ceiling_batches[0]
        argv = bench_cmd("train", *common, "--ceiling-only", "--compile", "-b", str(b), *timing)
        runs.append(Run(f"ceiling-b{b}-compile", "ceiling", argv, start + COMPILE_S + ceiling_s(b), 30))
    for kind in loaders:
        argv = bench_cmd("loaders", *common, "--loaders", kind, "--batch-size", str(s.batch))
        argv += ["--batches", str(s.loader_batches), "--warmup", str(s.loader_warmup)]
        runs.append(Run(f"loaders-{kind}", "loaders", argv, start + pillow_s + loader_s, 2 + 2 * pos[kind]))
    for kind in loaders:
        argv = bench_cmd("train", *common, "--loader", kind, "-b", str(s.batch), *timing)
        est = start + ceiling_s(s.batch) + max(ceiling_s(s.batch), loader_s)
        runs.append(Run(f"train-{kind}", "train", argv, est, 1 + 2 * pos[kind]))
    if "dali" in loaders:
        for i, load in enumerate(s.hw_decoder_loads):
            argv = bench_cmd("loaders", *common, "--loaders", "dali", "--batch-size", str(s.batch))
            argv += ["--batches", str(s.loader_batches), "--warmup", str(s.loader_warmup)]
            argv += ["--hw-decoder-load", str(load)]
            runs.append(Run(f"dali-hw-{load:g}", "dali-sweep", argv, start + pillow_s + loader_s, 10 + i))
    for run in runs:
        if run.argv[2] == "alexnet.tools.bench":
            run.json_path = runs_dir / f"{run.name}.json"
            run.argv += ["--json", str(run.json_path)]
    return runs


def select(runs: list[Run], stages: list[str]) -> list[Run]:
    """The runs STAGES names (a stage or a single run), in execution order; refuses a name that is neither."""
    if not stages:
        return runs
    names = {r.name for r in runs}
    unknown = [s for s in stages if s not in STAGES and s not in names]
    if unknown:
        raise click.ClickException(
            f"STAGES={','.join(stages)}: {', '.join(unknown)} is no stage of this plan; choose from "
            f"{', '.join(STAGES)} or single runs ({', '.join(sorted(names))})"
        )
    return [r for r in runs if r.stage in stages or r.name in stages]


def data_estimate(sizes: Sizes, ffcv: bool, reuse: bool) -> float:
    """Seconds to make the data set on this process's cores (0 when a large enough one is there)."""
    if reuse:
        return 0.0
    per_image = DATA_CPU_S_PER_IMAGE["synth"] + DATA_CPU_S_PER_IMAGE["prepare"]
    per_image += DATA_CPU_S_PER_IMAGE["ffcv"] if ffcv else 0.0
    images = sizes.classes * (sizes.train_per_class + sizes.val_per_class)
    return 3 * START_S["cpu"] + images * per_image / default_workers()


def fit_budget(runs: list[Run], budget_s: float) -> list[Run]:
    """Keep runs by priority while their estimates fit `budget_s`; mark the others skipped. Returns those kept."""
    left, kept = budget_s, set()
    for run in sorted((r for r in runs if not r.record), key=lambda r: r.priority):
        if run.estimate_s <= left:
            kept.add(run.name)
            left -= run.estimate_s
        else:
            run.record = {"status": "skipped", "reason": f"not in the budget (estimate {run.estimate_s:.0f} s)"}
    return [r for r in runs if r.name in kept]


def skip(runs: list[Run], stage_test: Any, reason: str) -> None:
    """Mark the runs not yet decided whose stage passes `stage_test` as skipped, with `reason`."""
    for r in runs:
        if not r.record and stage_test(r.stage):
            r.record = {"status": "skipped", "reason": reason}


def plan(
    minutes: float, device: str, dry: bool, loaders: list[str], data: Path | None, out: Path, stages: list[str]
) -> tuple[Sizes, list[Run], float]:
    """The largest sizes whose runs fit BENCH_MINUTES (at least one timed interval), the runs and the data estimate."""
    budget = minutes * 60 - OUTPUT_RESERVE_S
    candidates = [DRY_SIZES] if dry else [gpu_sizes(k) for k in (3, 2, 1)]
    for sizes in candidates:
        path = data or default_data(out, sizes)
        runs = select(make_runs(sizes, device, loaders, path, out / "runs"), stages)
        if dry:  # no CUDA device: every test would skip (the CPU suite runs them anyway)
            skip(runs, lambda stage: stage == "cuda-tests", "dry run: no CUDA device, every test would skip")
        elif not TESTS.is_dir():
            skip(runs, lambda stage: stage == "cuda-tests", f"no {TESTS} folder beside the installed code")
        reuse = data is not None or is_ready(path, "ffcv" in loaders)
        needs_data = any(r.stage != "cuda-tests" and not r.record for r in runs)
        data_s = data_estimate(sizes, "ffcv" in loaders, reuse) if needs_data else 0.0
        if data_s + sum(r.estimate_s for r in runs if not r.record) <= budget:
            break
    if data_s > budget:  # not even the data set fits: measure nothing rather than overrun
        skip(runs, lambda stage: stage != "cuda-tests", f"not in the budget: the data set alone needs ~{data_s:.0f} s")
        data_s = 0.0
    fit_budget(runs, budget - data_s)
    return sizes, runs, data_s


def default_data(out: Path, sizes: Sizes) -> Path:
    """Where the synthetic set of this size lives: one folder per size, so a re-run reuses it."""
    return out / "data" / f"synth-{sizes.classes}x{sizes.train_per_class}"


def is_ready(data: Path, ffcv: bool) -> bool:
    """A finished prepare + pca-stats (and FFCV beton when asked) at `data`."""
    try:
        complete = json.loads((data / "manifest.json").read_text()).get("complete")
    except (OSError, ValueError):
        return False
    return bool(complete) and (data / "pca.json").is_file() and (not ffcv or (data / "ffcv" / "train.beton").is_file())


def make_data(data: Path, sizes: Sizes, ffcv: bool) -> None:
    """synth → prepare → pca-stats (→ export-ffcv) into `data`, the source tree in a temporary folder beside it."""
    from alexnet.pipeline.offline.ffcv_export import export
    from alexnet.pipeline.offline.pca import compute_pca
    from alexnet.pipeline.offline.prepare import prepare
    from alexnet.pipeline.offline.synth import write_tree
    from alexnet.pipeline.store.pca_file import PCA_FILE, save_pca

    data.parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers()
    with tempfile.TemporaryDirectory(dir=data.parent, prefix="synth-src-") as src:
        print(write_tree(Path(src) / "ilsvrc", sizes.classes, sizes.train_per_class, sizes.val_per_class, 0))
        prepare(Path(src) / "ilsvrc", data, workers=workers, overwrite=True)
    save_pca(compute_pca(data, min(sizes.train_images, 2000), workers), data / PCA_FILE)
    if ffcv:
        export(data, workers=workers)


def run_child(run: Run, timeout: float, log_path: Path, env: dict[str, str]) -> dict[str, Any]:
    """Run one command in its own process group, echoing and logging its output; kill the group at `timeout`."""
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            run.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )

        def pump() -> None:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                print(f"  | {line}", end="", flush=True)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            code, status = proc.wait(timeout=timeout), None
        except subprocess.TimeoutExpired:
            kill_group(proc)
            code, status = proc.returncode, "timeout"
        except BaseException:  # Ctrl-C reaches only this process: the child's own group must go too
            kill_group(proc)
            raise
        reader.join(timeout=5)
    record = {
        "status": status or ("ok" if code == 0 else "failed"),
        "returncode": code,
        "seconds": round(time.monotonic() - start, 1),
        "timeout_s": round(timeout, 1),
        "log": str(log_path),
    }
    record["figures"] = figures(run, list(tail))
    if record["status"] != "ok":
        record["tail"] = list(tail)
    return record


def kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the child's process group, up to 10 s for the child to exit, then SIGKILL to whatever
    of the group is left (DataLoader workers and pools outlive a killed parent otherwise)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            continue


PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)")


def figures(run: Run, lines: list[str]) -> Any:
    """What the run measured: its --json document, or pytest's counts from its last `lines`."""
    if run.json_path is not None and run.json_path.is_file():
        return json.loads(run.json_path.read_text())
    if run.stage == "cuda-tests":
        summary = next((line for line in reversed(lines) if PYTEST_COUNT.search(line)), "")
        return {k.rstrip("s") if k.startswith("error") else k: int(n) for n, k in PYTEST_COUNT.findall(summary)}
    return None


def environment(device: str) -> dict[str, Any]:
    """Versions found: Python, torch and its CUDA and cuDNN, DALI, FFCV; the GPUs and driver (nvidia-smi)."""
    import torch

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "dali": dist_version("nvidia-dali"),
        "ffcv": dist_version("ffcv"),
        "cores": default_workers(),
        "gpus": [],
        "driver": None,
    }
    if device == "cuda":
        env["gpus"], env["driver"] = gpus()
    return env


def dist_version(prefix: str) -> str | None:
    """The version of the installed distribution whose name is `prefix` or starts with `prefix-` (DALI's carries its CUDA)."""
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == prefix or name.startswith(prefix + "-"):
            return f"{dist.version} ({name})" if name != prefix else dist.version
    return None


def gpus() -> tuple[list[str], str | None]:
    """GPU names and the driver version from nvidia-smi; torch's device names when it is absent."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        rows = [[c.strip() for c in line.split(",")] for line in out.splitlines() if line.strip()]
        return [f"{r[0]} ({r[1]})" for r in rows], rows[0][2] if rows else None
    except (OSError, subprocess.SubprocessError, IndexError):
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], None


def stage_status(runs: list[dict[str, Any]]) -> str:
    """ok (every run ok), failed (any failed or timed out), skipped (none ran), partial (some skipped)."""
    states = {r["record"].get("status", "pending") for r in runs}
    if states & {"failed", "timeout"}:
        return "failed"
    if states == {"ok"}:
        return "ok"
    return "partial" if "ok" in states else "skipped" if states <= {"skipped"} else "pending"


def document(header: dict[str, Any], runs: list[Run]) -> dict[str, Any]:
    """bench-gpu.json: the header (environment, sizes, budget), per stage its status, per run its record and figures."""
    rows = {
        r.name: {
            "stage": r.stage,
            "command": " ".join(r.argv),
            "estimate_s": round(r.estimate_s, 1),
            "record": r.record,
        }
        for r in runs
    }
    stages = {
        s: {
            "status": stage_status([v for v in rows.values() if v["stage"] == s]),
            "runs": [n for n, v in rows.items() if v["stage"] == s],
        }
        for s in STAGES
        if any(v["stage"] == s for v in rows.values())
    }
    return {**header, "stages": stages, "runs": rows}


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def rate(x: float) -> str:
    """Images/s: whole numbers, or three digits below 100 (the dry run's CPU rates)."""
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def training_rows(runs: dict[str, Any]) -> list[str]:
    """The training table: each ceiling run, then each loader through the trainer (× its own run's ceiling)."""
    rows = []
    for r in runs.values():
        doc = r["record"].get("figures")
        if r["stage"] == "ceiling" and doc:
            label = "ceiling (resident batch)" + (", torch.compile" if doc["compile"] else "")
            c = doc["ceiling"]
            rows.append(
                f"| {label} | {doc['batch_size']} | {rate(c['images_per_s'])} | {c['data_wait']:.1%} | 1.00 | |"
            )
        if r["stage"] == "train" and doc:
            for kind, x in doc["loaders"].items():
                rows.append(
                    f"| loader {kind} | {doc['batch_size']} | {rate(x['images_per_s'])} | {x['data_wait']:.1%} | "
                    f"{x['vs_ceiling']:.2f} | {x['verdict']} |"
                )
    return rows


def loader_rows(runs: dict[str, Any], stage: str) -> list[str]:
    """The loaders' table (or the hw_decoder_load sweep): the Pillow decode ceiling once, then each run's loader."""
    rows, ceiling_shown = [], False
    for name, r in runs.items():
        doc = r["record"].get("figures")
        if r["stage"] != stage or not doc:
            continue
        if not ceiling_shown:
            d = doc["decode_ceiling"]
            rows.append(
                f"| Pillow decode ceiling ({doc['cores']} cores) | {rate(d['images_per_s'])} | 1.00 | "
                f"{d['cpu_cores']:.2f} | {fmt(d['images_per_cpu_s'], '.0f')} |"
            )
            ceiling_shown = True
        for kind, m in doc["loaders"].items():
            label = kind if stage == "loaders" else f"dali, hw_decoder_load {name.removeprefix('dali-hw-')}"
            rows.append(
                f"| {label} | {rate(m['images_per_s'])} | {m['vs_decode_ceiling']:.2f} | {m['cpu_cores']:.2f} | "
                f"{fmt(m['images_per_cpu_s'], '.0f')} |"
            )
    return rows


def note(record: dict[str, Any]) -> str:
    """The stages table's last column: why a run did not give its figures."""
    if record.get("status") in ("failed", "timeout"):
        last = next((line for line in reversed(record.get("tail", [])) if line.strip()), "")
        return f"exit {record.get('returncode')}: {last.strip()[:160]}".replace("|", "\\|")
    return record.get("reason", "")


def markdown(doc: dict[str, Any]) -> str:
    """bench-gpu.md: the tables to paste into docs/benchmarks.md, and what happened to every run."""
    env, s = doc["environment"], doc["sizes"]
    where = ", ".join(env["gpus"]) or "no GPU"
    title = "DRY RUN on the CPU: plumbing only, not GPU figures" if doc["dry_run"] else where
    lines = [
        f"# bench-gpu: {title}",
        "",
        f"{doc['started'][:16].replace('T', ' ')} UTC; torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
        f"DALI {env['dali']}, FFCV {env['ffcv'] or 'not installed'}, driver {env['driver'] or '-'}, "
        f"{env['cores']} cores for this process; BENCH_MINUTES={doc['minutes']:g}, "
        f"took {doc.get('elapsed_s', 0) / 60:.1f} min.",
        "",
        f"Training rows: batch {s['batch']}, logging every {s['log_every']} steps, {s['warmup']} warm-up + "
        f"{s['steps']} timed steps in one epoch; loaders: {s['loader_batches']} timed batches of {s['batch']} "
        f"after {s['loader_warmup']}. Data: {doc['data'].get('train_images', '-')} synthetic train images "
        f"({doc['data'].get('status', '-')}).",
        "",
    ]
    train = training_rows(doc["runs"])
    if train:
        lines += [
            "## Training loop: `alexnet-bench train` (the trainer's recipe: bf16 autocast, channels_last on CUDA)",
            "",
        ]
        lines += [
            "| row | batch | images/s | data-wait | × ceiling | verdict |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        lines += train
        lines += [
            "",
            "A loader's × ceiling is against the ceiling measured in its own run (same process, same batch).",
            "",
        ]
    for stage, heading in (
        ("loaders", "Loaders alone: `alexnet-bench loaders`"),
        ("dali-sweep", "DALI's `hw_decoder_load`"),
    ):
        rows = loader_rows(doc["runs"], stage)
        if rows:
            lines += [f"## {heading} (device {doc['device']})", ""]
            lines += [
                "| | images/s | × decode ceiling | CPU cores | images/CPU·s |",
                "| --- | ---: | ---: | ---: | ---: |",
            ]
            lines += rows
            lines += ["", "× decode ceiling: against the Pillow decode ceiling measured in the same run.", ""]
    lines += ["## Runs", "", "| run | stage | status | seconds | note |", "| --- | --- | --- | ---: | --- |"]
    for name, r in doc["runs"].items():
        rec = r["record"]
        lines.append(
            f"| {name} | {r['stage']} | {rec.get('status', 'pending')} | {fmt(rec.get('seconds'), '.0f')} | {note(rec)} |"
        )
    return "\n".join(lines) + "\n"


def chart(doc: dict[str, Any], path: Path) -> None:
    """bench-gpu.png: every measured rate side by side (ceilings grey, trainer + loader green, loaders alone blue)."""
    names, rates, colours = [], [], []
    for name, r in doc["runs"].items():
        fig = r["record"].get("figures")
        if r["stage"] == "cuda-tests" or not fig:
            continue
        if r["stage"] == "ceiling":
            names.append(f"ceiling\nb{fig['batch_size']}" + ("\ncompile" if fig["compile"] else ""))
            rates.append(fig["ceiling"]["images_per_s"])
            colours.append("0.6")
        elif r["stage"] == "train":
            for kind, x in fig["loaders"].items():
                names.append(f"train+{kind}\n{x['vs_ceiling']:.2f}× ceiling")
                rates.append(x["images_per_s"])
                colours.append("tab:green")
        else:
            for kind, m in fig["loaders"].items():
                sweep = r["stage"] == "dali-sweep"
                names.append(f"dali hw\n{name.removeprefix('dali-hw-')}" if sweep else f"{kind}\nalone")
                rates.append(m["images_per_s"])
                colours.append("tab:orange" if sweep else "tab:blue")
    title = (
        "bench-gpu dry run on the CPU (not GPU figures)"
        if doc["dry_run"]
        else f"bench-gpu: {', '.join(doc['environment']['gpus'])}"
    )
    bar_chart(names, rates, colours, title, path)


def write_outputs(doc: dict[str, Any], out: Path, with_chart: bool = False) -> None:
    """bench-gpu.json and .md (and .png), each written whole under a temporary name."""
    write_atomic(out / "bench-gpu.json", json.dumps(doc, indent=2) + "\n")
    write_atomic(out / "bench-gpu.md", markdown(doc))
    if with_chart:
        chart(doc, out / "bench-gpu.png")


def print_plan(sizes: Sizes, runs: list[Run], data_s: float, minutes: float, data: Path) -> None:
    kept = [r for r in runs if not r.record]
    total = data_s + sum(r.estimate_s for r in kept)
    print(f"bench-gpu plan for BENCH_MINUTES={minutes:g}: estimate {total / 60:.1f} min, every run with a timeout")
    made = f"~{data_s:.0f} s on {default_workers()} cores" if data_s else "there already, or not needed"
    print(f"  data {data} ({sizes.train_images} train images): {made}")
    for r in runs:
        mark = f"skipped: {r.record['reason']}" if r.record else f"~{r.estimate_s:.0f} s"
        print(f"  {r.name:<24} {r.stage:<11} {mark}")


def child_env(dry: bool) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    if dry:
        env["CUDA_VISIBLE_DEVICES"] = ""  # every stage on the CPU, even on a GPU machine
    return env


def parse_list(value: str) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def default_loaders() -> list[str]:
    """dali and torch, and ffcv when it imports (bench-gpu.sh builds nothing)."""
    import importlib.util

    return ["dali", "torch"] + (["ffcv"] if importlib.util.find_spec("ffcv") else [])


def check_cuda(dry: bool) -> None:
    import torch

    if not dry and not torch.cuda.is_available():
        raise click.ClickException(
            f"torch {torch.__version__} at {sys.executable} sees no CUDA device; run bench-gpu on a GPU machine, "
            "or with --dry-run (DEVICE=cpu) to check its plumbing on the CPU"
        )


def prepare_data(runs: list[Run], data: Path, given: bool, sizes: Sizes, ffcv: bool) -> dict[str, Any]:
    """The data step's record: reused, made, or failed (then every run that reads data is skipped)."""
    record: dict[str, Any] = {"path": str(data), "train_images": sizes.train_images}
    if not any(r.stage != "cuda-tests" and not r.record for r in runs):
        return {**record, "status": "not needed"}
    if given or is_ready(data, ffcv):
        return {**record, "status": "reused" if not given else "BENCH_DATA"}
    start = time.monotonic()
    try:
        make_data(data, sizes, ffcv)
    except Exception as e:  # any failure here is recorded, and the CUDA tests still run
        for r in runs:
            if r.stage != "cuda-tests" and not r.record:
                r.record = {"status": "skipped", "reason": "no data set: the data step failed"}
        return {**record, "status": "failed", "error": f"{type(e).__name__}: {e}"}
    return {**record, "status": "made", "seconds": round(time.monotonic() - start, 1)}


def execute(runs: list[Run], deadline: float, logs: Path, env: dict[str, str], save: Any) -> None:
    """Each run not yet skipped, in order, with a timeout that leaves the later runs their estimates."""
    todo = [r for r in runs if not r.record]
    for i, run in enumerate(todo):
        remaining = deadline - time.monotonic()
        later = sum(r.estimate_s for r in todo[i + 1 :])
        if remaining < 5:
            run.record = {"status": "skipped", "reason": "the budget was spent"}
            continue
        timeout = min(remaining, max(run.estimate_s, remaining - later))
        print(f"\n== {run.name} (timeout {timeout:.0f} s): {' '.join(run.argv[1:])}", flush=True)
        if run.json_path is not None:
            run.json_path.unlink(missing_ok=True)  # an earlier bench's figures are not this run's
        run.record = run_child(run, timeout, logs / f"{run.name}.log", env)
        print(f"== {run.name}: {run.record['status']} in {run.record['seconds']:.0f} s", flush=True)
        save()


def inject_failures(runs: list[Run], fail: str) -> None:
    """BENCH_FAIL: give each named run an argument its command refuses (the failure path, end to end)."""
    for name in parse_list(fail):
        run = next((r for r in runs if r.name == name), None)
        if run is None:
            raise click.ClickException(
                f"BENCH_FAIL={fail}: {name} is no run of this plan ({', '.join(r.name for r in runs)})"
            )
        run.argv = [*run.argv, "--no-such-flag"]


def check_loaders(loaders: str) -> list[str]:
    """LOADERS, or the default; one line for a name bench-gpu does not run."""
    kinds = parse_list(loaders) or default_loaders()
    if bad := [k for k in kinds if k not in LOADERS]:
        raise click.ClickException(
            f"LOADERS={loaders}: {', '.join(bad)} is not a loader bench-gpu runs; choose from {', '.join(LOADERS)}"
        )
    return kinds


def describe(env: dict[str, Any], dry: bool) -> str:
    """The versions line printed first."""
    where = "dry run on the CPU" if dry else ", ".join(env["gpus"])
    return (
        f"bench-gpu: {where}; driver {env['driver']}, torch {env['torch']} (CUDA {env['cuda']}, cuDNN {env['cudnn']}), "
        f"DALI {env['dali']}, FFCV {env['ffcv'] or 'not installed'}, {env['cores']} cores"
    )


def finish(doc: dict[str, Any], out: Path) -> None:
    """The three files, the closing line, and exit 1 (in one line) when any run failed."""
    write_outputs(doc, out, with_chart=True)
    bad = [n for n, r in doc["runs"].items() if r["record"].get("status") in ("failed", "timeout")]
    print(
        f"\nbench-gpu: {len(doc['runs']) - len(bad)} of {len(doc['runs'])} runs without failure in "
        f"{doc['elapsed_s'] / 60:.1f} min → {out}/bench-gpu.json, bench-gpu.md, bench-gpu.png"
    )
    if bad:
        raise click.ClickException(
            f"{', '.join(bad)} failed; their exit codes and last lines are in {out}/bench-gpu.json"
        )


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--dry-run", is_flag=True, help="Every stage on the CPU with tiny sizes: checks the plumbing, measures nothing."
)
@click.option(
    "--out",
    envvar="OUT",
    default="bench-gpu",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the three files (env OUT).",
)
@click.option(
    "--minutes",
    envvar="BENCH_MINUTES",
    default=8.0,
    show_default=True,
    type=click.FloatRange(1.0, 600.0),
    help="The budget (env BENCH_MINUTES).",
)
@click.option(
    "--stages",
    envvar="STAGES",
    default="",
    help=f"Comma-separated stages or runs (env STAGES).  [default: {','.join(STAGES)}]",
)
@click.option(
    "--loaders",
    envvar="LOADERS",
    default="",
    help="Comma-separated loaders (env LOADERS).  [default: dali,torch and ffcv when it imports]",
)
@click.option(
    "--data",
    envvar="BENCH_DATA",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A prepared folder to use instead of the synthetic set (env BENCH_DATA).",
)
@click.option(
    "--device",
    envvar="DEVICE",
    default="cuda",
    show_default=True,
    type=click.Choice(["cuda", "cpu"]),
    help="cpu is --dry-run (env DEVICE).",
)
@click.option(
    "--fail",
    "fail",
    envvar="BENCH_FAIL",
    default="",
    help="Runs to make fail on purpose (an argument their command refuses), to see the failure path (env BENCH_FAIL).",
)
def main(
    dry_run: bool, out: Path, minutes: float, stages: str, loaders: str, data: Path | None, device: str, fail: str
) -> None:
    """Plan, run and record every GPU figure of the project within a budget; see scripts/bench-gpu.sh."""
    dry = dry_run or device == "cpu"
    device = "cpu" if dry else "cuda"
    kinds = check_loaders(loaders)
    check_cuda(dry)
    started, clock = datetime.now(timezone.utc), time.monotonic()
    deadline = clock + minutes * 60 - OUTPUT_RESERVE_S
    sizes, runs, data_s = plan(minutes, device, dry, kinds, data, out, parse_list(stages))
    inject_failures(runs, fail)
    for folder in (out, out / "runs", out / "logs"):  # only once the settings are known to be good
        folder.mkdir(parents=True, exist_ok=True)
    env = environment(device)
    print(describe(env, dry))
    path = data or default_data(out, sizes)
    print_plan(sizes, runs, data_s, minutes, path)
    header = {
        "bench_gpu": 1,
        "dry_run": dry,
        "device": device,
        "started": started.isoformat(timespec="seconds"),
        "minutes": minutes,
        "environment": env,
        "sizes": asdict(sizes),
        "loaders": kinds,
        "data": {"path": str(path), "status": "pending"},
    }
    save = lambda: write_outputs({**document(header, runs), "elapsed_s": round(time.monotonic() - clock, 1)}, out)  # noqa: E731
    save()
    header["data"] = prepare_data(runs, path, data is not None, sizes, "ffcv" in kinds)
    print(f"data: {header['data']['status']} ({path})")
    save()
    execute(runs, deadline, out / "logs", child_env(dry), save)
    finish({**document(header, runs), "elapsed_s": round(time.monotonic() - clock, 1)}, out)


if __name__ == "__main__":
    main()
