"""The README's commands, run as written on the finished demo (snakemake with the repository's
workflow, as in every workflow test), print what the README shows: times, dates and rates
masked, nothing else."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, snakemake

README = (REPO / "README.md").read_text()
BIN = Path(sys.executable).parent


def console_blocks(text: str) -> dict[str, list[str]]:
    """Each command of the README's ``console`` blocks (its ``$`` line, comment dropped, backslash
    continuations joined) -> the lines the README shows after it."""
    found: dict[str, list[str]] = {}
    for block in re.findall(r"```console\n(.*?)```", text, re.DOTALL):
        command = None
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.startswith("$ "):
                while line.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    line = line[:-1] + lines[i].strip()
                command = re.sub(r"\s+#.*$", "", line[2:]).strip()
                found.setdefault(command, [])
            elif command is not None:
                found[command].append(line)
            i += 1
    return found


SHOWN = console_blocks(README)


def masked(line: str) -> str:
    """A line with what changes from run to run masked: dates, times, numbers of rates."""
    line = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(,\d+)?", "<time>", line)
    line = re.sub(r"\d+ scenes/h in the last 10 min, \d+ over the run", "<rates>", line)
    return re.sub(r"\d+\.\d+", "<x>", line)


def run(command: str, cwd: Path) -> str:
    """A README command as typed (``.venv/bin/`` is this virtualenv's), in ``cwd``."""
    if command.startswith(".venv/bin/snakemake"):
        args = command.split()[1:]
        proc = snakemake(cwd, *args)
        return proc.stdout + proc.stderr
    typed = command.replace(".venv/bin/", f"{BIN}/")
    proc = subprocess.run(["bash", "-c", typed], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (command, proc.stderr)
    return proc.stdout


def test_the_help_is_the_readme_s() -> None:
    out = subprocess.run([str(BIN / "snakemap"), "--help"], capture_output=True, text=True, timeout=60).stdout
    shown = SHOWN[".venv/bin/snakemap --help"]
    assert out.splitlines()[: len(shown)] == shown


@pytest.mark.workflow
def test_the_demo_commands_print_what_the_readme_shows(demo_run: Path) -> None:
    assert SHOWN[".venv/bin/snakemake -n"] == [
        "Nothing to be done (all requested files are present and up to date)."
    ]
    assert "Nothing to be done (all requested files are present and up to date)." in run(
        ".venv/bin/snakemake -n", demo_run
    )
    # a scene's status: the same fields and values, times aside
    status = json.loads(run("cat results/clean/reef_e1/status.json", demo_run))
    shown = json.loads("\n".join(SHOWN["cat results/clean/reef_e1/status.json"]))
    assert set(status) == set(shown)
    assert {k: v for k, v in status.items() if k not in ("started", "finished")} == {
        k: v for k, v in shown.items() if k not in ("started", "finished")
    }
    assert 0 < status["started"] <= status["finished"]
    for command in (".venv/bin/snakemap progress", "grep epoch logs/train/arch-Unet.log"):
        out = run(command, demo_run).splitlines()
        shown = SHOWN[command]
        assert [masked(line) for line in out] == [masked(line) for line in shown], command
    # the areas: the same columns and classes (the figures follow the trained model's map)
    out = run("cat results/maps/models/arch-Unet/best/areas.csv", demo_run).splitlines()
    shown = SHOWN["cat results/maps/models/arch-Unet/best/areas.csv"]
    assert out[0] == shown[0] and [r.split(",")[0] for r in out] == [r.split(",")[0] for r in shown]
    summary = run(".venv/bin/snakemake --summary", demo_run).splitlines()
    shown = SHOWN[".venv/bin/snakemake --summary | head -4"]
    assert shown[0] in summary  # the header
    rows = {line.split("\t")[0]: line.split("\t")[2:] for line in summary if "\t" in line}
    for line in shown[1:]:
        path, _, *rest = line.split("\t")
        assert rows[path] == rest, path
    assert run(".venv/bin/snakemake --report report.html", demo_run).rstrip().endswith("Report created.")
