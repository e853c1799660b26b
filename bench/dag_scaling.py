"""Planning cost at scale: snakemap's shard workflow against a minimal per-scene Snakefile.

For manifests of 10,000, 100,000 and 1,000,000 apply scenes, prints the dry-run wall time and
peak memory of `snakemake -n` for this workflow (shards of --shard-size scenes), first with a
fresh project (the manifest is read and checked) and again (the checked manifest comes from its
cache, by content hash); beside it, up to --per-scene-max scenes, a minimal Snakefile with one
job per scene (empty placeholder files). Then times `snakemap progress` at the largest size
with all shards but two finished and one in flight. Goals at a million scenes: the dry run
<= 5 s from cold and <= 3 s warm, `snakemap progress` <= 1 s.

"Cold" is a new project folder: no `.snakemake/` (so no manifest cache, no shard fingerprints
kept), the operating system's file cache as the previous size left it, and the SLURM
controller's state as the tests leave it (stopped, its `slurm.conf` removed: the SLURM plugin's
import does not wait on it). "Warm" is the same command again. Snakemake's own floor, printed
beside: `snakemake --version` (its imports and plugins), and a dry run of a Snakefile with one
rule and no job.

    .venv/bin/python bench/dag_scaling.py [--sizes 10000 100000 1000000] [--shard-size 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

MINIMAL = """
import pandas as pd
SCENES = pd.read_csv(config["manifest"])["scene_id"].tolist()

rule all:
    input: expand("out/{s}.tif", s=SCENES)

rule one:
    input: "in/{s}.tif"
    output: "out/{s}.tif"
    shell: "cp {input} {output}"
"""

MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[2:], cwd=sys.argv[1], capture_output=True, text=True)
wall = time.perf_counter() - start
if proc.returncode:
    sys.exit(proc.stdout[-2000:] + proc.stderr[-2000:])
print(wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def measure(workdir: Path, cmd: list[str]) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(workdir), *cmd], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    wall, rss = map(float, out.stdout.split())
    return wall, rss


def setup(root: Path, n: int, shard_size: int, per_scene_max: int) -> tuple[Path, Path]:
    ours, minimal = root / "snakemap", root / "minimal"
    for d in (ours / "config", minimal / "in", ours / "results" / "models" / "base"):
        d.mkdir(parents=True)
    ids = [f"quad_{i:07d}" for i in range(n)]
    if n <= per_scene_max:  # apply scenes are not inputs of snakemap's DAG: only these exist
        for i in ids:
            (minimal / "in" / f"{i}.tif").touch()
        (minimal / "manifest.csv").write_text("scene_id\n" + "\n".join(ids) + "\n")
        (minimal / "Snakefile").write_text(MINIMAL)
    rows = "".join(f"{i},in/{i}.tif,,,apply,\n" for i in ids)
    (ours / "config" / "manifest.csv").write_text("scene_id,uri,sha256,label_uri,role,aoi\n" + rows)
    config = {
        "manifest": "config/manifest.csv",
        "bands": {"names": ["blue", "green", "red", "nir"]},
        "labels": {"classes": ["land", "water"], "remap": {"0": "land", "1": "water"}},
        "models": {"base": {}},
        "apply": {"predictors": ["models/base/best"], "shard_size": shard_size},
    }
    (ours / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    (ours / "results" / "models" / "base" / "best.ckpt").touch()  # as if trained: plan the application
    return ours, minimal


def progress_timing(ours: Path, n: int, shard_size: int) -> tuple[float, list[float], str]:
    from snakemap.outputs.progress import progress
    from snakemap.plan.shards import shard_ids, shard_members

    ids = [f"quad_{i:07d}" for i in range(n)]
    root = ours / "results" / "maps" / "models" / "base" / "best"
    (root / "shards").mkdir(parents=True)
    (root / "scenes").mkdir()
    now = time.time()
    shards = shard_ids(n, shard_size)
    for k, shard in enumerate(shards[:-2]):
        entries = [
            {
                "scene_id": s,
                "status": "corrupt" if j == 0 else "ok",
                "reason": "bad" if j == 0 else "",
                "finished": now - 60 * (len(shards) - k),
            }
            for j, s in enumerate(shard_members(ids, shard, shard_size))
        ]
        manifest = root / "shards" / f"{shard}.json"
        manifest.write_text(json.dumps({"shard": shard, "scenes": entries}))
        os.utime(manifest, (entries[-1]["finished"], entries[-1]["finished"]))  # as a shard job leaves it
    for s in shard_members(ids, shards[-2], shard_size)[: shard_size // 2]:  # one shard in flight
        (root / "scenes" / f"{s}.json").write_text(
            json.dumps({"scene_id": s, "status": "ok", "finished": now})
        )
    command = []
    for _ in range(2):  # first: every shard manifest is read (and summarised); then as a watcher sees it
        start = time.perf_counter()
        out = subprocess.run(
            [str(BIN / "snakemap"), "progress", "--config", "config/config.yaml"],
            cwd=ours,
            capture_output=True,
            text=True,
            check=True,
        )
        command.append(time.perf_counter() - start)
    start = time.perf_counter()
    figures = progress(root, ids, shard_size)
    call = time.perf_counter() - start
    assert figures["pending"] == shard_size + (n - (len(shards) - 1) * shard_size) - shard_size // 2
    return call, command, out.stdout.splitlines()[0]


def dry_run(ours: Path) -> tuple[float, float]:
    """Wall time and peak memory of `snakemake -n` planning the mosaic and progress of a predictor."""
    targets = [f"results/maps/models/base/best/{f}" for f in ("overview.tif", "progress.json")]
    snakefile = str(REPO / "workflow" / "Snakefile")
    return measure(
        ours, [str(BIN / "snakemake"), *targets, "-n", "--snakefile", snakefile, "--cores", "1", "--quiet"]
    )


FLOOR = """
rule all:
    input: []
"""


def floor(root: Path) -> tuple[float, float]:
    """Seconds of `snakemake --version` and of a dry run of a Snakefile with no job."""
    (root / "floor").mkdir(exist_ok=True)
    (root / "floor" / "Snakefile").write_text(FLOOR)
    version = measure(root / "floor", [str(BIN / "snakemake"), "--version"])[0]
    empty = measure(root / "floor", [str(BIN / "snakemake"), "-n", "--cores", "1", "--quiet"])[0]
    return version, empty


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000, 1000000])
    ap.add_argument("--shard-size", type=int, default=2000)
    ap.add_argument("--per-scene-max", type=int, default=100000, help="largest per-scene Snakefile")
    args = ap.parse_args()
    snakemake = str(BIN / "snakemake")
    print(f"shards of {args.shard_size} scenes")
    print(
        f"{'scenes':>8} | {'snakemap dry run, fresh':>24} | {'again (cached manifest)':>24} | "
        f"{'per-scene Snakefile':>22} | time ratio | memory ratio"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            ours, minimal = setup(Path(tmp), n, args.shard_size, args.per_scene_max)
            t0, m0 = dry_run(ours)
            t1, m1 = dry_run(ours)
            line = f"{n:>8} | {t0:10.1f} s {m0:8.0f} MiB | {t1:10.1f} s {m1:8.0f} MiB | "
            if n <= args.per_scene_max:
                t2, m2 = measure(
                    minimal, [snakemake, "-n", "--cores", "1", "--quiet", "--config", "manifest=manifest.csv"]
                )
                line += f"{t2:8.1f} s {m2:8.0f} MiB | {t1 / t2:10.3f} | {m1 / m2:12.3f}"
            else:
                line += f"{'(not run)':>22} |"
            print(line, flush=True)
            if n == max(args.sizes):
                call, command, first = progress_timing(ours, n, args.shard_size)
    with tempfile.TemporaryDirectory() as tmp:
        version, empty = floor(Path(tmp))
    print(f"\nSnakemake's floor: --version {version:.1f} s; a dry run with no job {empty:.1f} s")
    print(
        f"\nsnakemap progress at {max(args.sizes)} scenes: {command[0]:.2f} s as a command, first "
        f"call; then {command[1]:.2f} s (finished shards' summaries kept), {call:.3f} s of it in the function"
    )
    print(f"  {first}")


if __name__ == "__main__":
    main()
