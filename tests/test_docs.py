"""Docs are code: every repository path, `make` target, console script, subcommand and flag that
README.md and docs/*.md name must exist in the tree as it is."""

from __future__ import annotations

import re
import shlex
from importlib import metadata
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Folders a repository path starts with; other slashed names in the docs are user paths (OUT/…, /data/…).
TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".") or p.name == ".ci"} - {".venv"}
SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def repo_files() -> list[str]:
    skip = {".git", ".venv", "__pycache__", ".pytest_cache", "demo-data", "runs", "build"}
    return [
        p.relative_to(ROOT).as_posix()
        for p in ROOT.rglob("*")
        if not skip.intersection(p.relative_to(ROOT).parts) and not p.name.endswith(".egg-info")
    ]


def named_paths(text: str) -> set[str]:
    """What a doc names as a file or folder of this repository: every relative link target, and the
    backticked words that start at a top-level folder (`pipeline/…`, `docs/…`) or are Python files
    (`paper.py`, `loaders/contract.py`). Other words are user paths (`OUT/…`) or other projects' files."""
    found = {t for t in LINK.findall(text) if "://" not in t and not t.startswith(("/", "../"))}
    for span in SPAN.findall(text):
        for word in span.split():
            word = word.strip("'\",;()")
            if ":" in word or word.startswith(("../", "/", "~", "$", "-")) or any(c in word for c in "*<>{}=|…"):
                continue
            if word.split("/", 1)[0] in TOP and (word.endswith("/") or "/" in word) or word.endswith(".py"):
                found.add(word)
    return found


def path_exists(word: str, doc: Path, files: list[str]) -> bool:
    """A repository path (from the root or the doc's folder), or a name relative to some folder of the tree."""
    if (ROOT / word).exists() or (doc.parent / word).exists():
        return True
    tail = word.rstrip("/")
    return any(f == tail or f.endswith("/" + tail) for f in files)


def test_every_named_path_exists() -> None:
    files = repo_files()
    missing = [
        f"{doc.relative_to(ROOT)}: {word}"
        for doc in DOCS
        for word in sorted(named_paths(doc.read_text()))
        if not path_exists(word, doc, files)
    ]
    assert not missing, "docs name paths the tree does not have:\n" + "\n".join(missing)


def test_the_path_check_catches_a_stale_name(tmp_path: Path) -> None:
    """The check itself: the two names the layout change made stale are caught, the live ones pass."""
    files = repo_files()
    doc = tmp_path / "x.md"
    stale = "The contract is in `pipeline/loaders.py`, the kernel in `pipeline/dali_cpu_finish.py`."
    live = "The contract is in `pipeline/loaders/contract.py`, the kernel in `loaders/dali_cpu_finish.py`."
    assert sorted(w for w in named_paths(stale) if not path_exists(w, doc, files)) == sorted(named_paths(stale))
    assert all(path_exists(w, doc, files) for w in named_paths(live))


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return {t for line in re.findall(r"^([\w .-]+):(?!=)", text, re.M) for t in line.split()}


def commands(text: str) -> list[str]:
    """Shell commands a doc shows: lines of fenced blocks and backticked spans (continuations joined)."""
    blocks = [b.replace("\\\n", " ") for b in FENCE.findall(text)]
    lines = [line for b in blocks for line in b.splitlines()]
    outside = FENCE.sub("", text)
    return [c.split("#")[0].strip() for c in lines + SPAN.findall(outside)]


def test_every_make_target_exists() -> None:
    targets = make_targets()
    named = {t for doc in DOCS for c in commands(doc.read_text()) for t in re.findall(r"\bmake ([a-z][\w-]*)", c)}
    assert named, "the docs name no make target at all: the pattern is wrong"
    assert named <= targets, f"the docs name make targets the Makefile lacks: {sorted(named - targets)}"


def console_scripts() -> dict[str, click.Command]:
    """The project's console scripts (its installed entry points), by name."""
    points = metadata.distribution("alexnet-pipeline").entry_points
    loaded = {p.name: p.load() for p in points if p.group == "console_scripts"}
    # `python -m alexnet.tools.train` (torchrun's form) is alexnet-train.
    loaded["alexnet.tools.train"] = loaded["alexnet-train"]
    return loaded


def invoked(cmd: str, scripts: dict[str, click.Command]) -> tuple[str, list[str]] | None:
    """(script, its arguments) when a command line runs one of the console scripts, else None."""
    try:
        words = shlex.split(cmd)
    except ValueError:
        words = cmd.split()
    for i, word in enumerate(words):
        if word in scripts:
            return word, words[i + 1 :]
    return None


def unknown_words(script: str, args: list[str], command: click.Command) -> list[str]:
    """The subcommand and --flags of one command line that the click command does not have."""
    if isinstance(command, click.Group):
        sub = next((a for a in args if not a.startswith("-")), None)
        if sub is None or sub not in command.commands:
            return [f"{script} {sub}"] if sub and re.fullmatch(r"[a-z][\w-]*", sub) else []
        command, script = command.commands[sub], f"{script} {sub}"
    known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help", "-h"}
    flags = [a.split("=")[0] for a in args if re.fullmatch(r"--?[a-zA-Z][\w-]*(=.*)?", a)]
    return [f"{script} {f}" for f in flags if f not in known]


def test_every_console_script_subcommand_and_flag_exists() -> None:
    scripts = console_scripts()
    named = [(d, c) for d in DOCS for c in commands(d.read_text()) if re.search(r"\balexnet[-.]", c)]
    assert named, "the docs show no console script at all: the pattern is wrong"
    bad = []
    for doc, cmd in named:
        if re.search(r"\balexnet-[a-z]+\b", cmd) and not invoked(cmd, scripts):
            bad += [f"{doc.name}: {w}" for w in re.findall(r"\balexnet-[a-z]+\b", cmd) if w not in scripts]
            continue
        if hit := invoked(cmd, scripts):
            bad += [f"{doc.name}: {w}" for w in unknown_words(hit[0], hit[1], scripts[hit[0]])]
    assert not bad, "the docs name commands or flags that do not exist:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("cmd", ["alexnet-train --no-such-flag", "alexnet-tools no-such-command"])
def test_the_command_check_catches_a_stale_name(cmd: str) -> None:
    scripts = console_scripts()
    script, args = invoked(cmd, scripts)
    assert unknown_words(script, args, scripts[script])
