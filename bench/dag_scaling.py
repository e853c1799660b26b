"""Planning cost at scale: snakemap's shard workflow against a minimal per-scene Snakefile.

For manifests of 10,000, 50,000 and 100,000 apply scenes (empty placeholder files), prints the
dry-run wall time and peak memory of `snakemake -n` for this workflow (shards of --shard-size
scenes) and for a minimal Snakefile with one job per scene, side by side; then times
`snakemap progress` at the largest size with all shards but two finished and one in flight.

    .venv/bin/python bench/dag_scaling.py [--sizes 10000 50000 100000] [--shard-size 500]
"""

from __future__ import annotations

import argparse
import json
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


def setup(root: Path, n: int, shard_size: int) -> tuple[Path, Path]:
    ours, minimal = root / "snakemap", root / "minimal"
    for d in (ours / "config", minimal / "in", ours / "in", ours / "results" / "models" / "base"):
        d.mkdir(parents=True)
    ids = [f"quad_{i:06d}" for i in range(n)]
    for i in ids:
        (minimal / "in" / f"{i}.tif").touch()
        (ours / "in" / f"{i}.tif").touch()
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


def progress_timing(ours: Path, n: int, shard_size: int) -> tuple[float, float, str]:
    from snakemap.progress import progress
    from snakemap.shards import shard_ids, shard_members

    ids = [f"quad_{i:06d}" for i in range(n)]
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
        (root / "shards" / f"{shard}.json").write_text(json.dumps({"shard": shard, "scenes": entries}))
    for s in shard_members(ids, shards[-2], shard_size)[: shard_size // 2]:  # one shard in flight
        (root / "scenes" / f"{s}.json").write_text(
            json.dumps({"scene_id": s, "status": "ok", "finished": now})
        )
    start = time.perf_counter()
    figures = progress(root, ids, shard_size)
    call = time.perf_counter() - start
    start = time.perf_counter()
    out = subprocess.run(
        [str(BIN / "snakemap"), "progress", "--config", "config/config.yaml"],
        cwd=ours,
        capture_output=True,
        text=True,
        check=True,
    )
    command = time.perf_counter() - start
    assert figures["pending"] == shard_size + (n - (len(shards) - 1) * shard_size) - shard_size // 2
    return call, command, out.stdout.splitlines()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000, 100000])
    ap.add_argument("--shard-size", type=int, default=500)
    args = ap.parse_args()
    snakemake = str(BIN / "snakemake")
    print(
        f"{'scenes':>8} | {'snakemap dry run':>22} | {'per-scene Snakefile':>22} | time ratio | memory ratio"
    )
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            ours, minimal = setup(Path(tmp), n, args.shard_size)
            targets = [f"results/maps/models/base/best/{f}" for f in ("mosaic.vrt", "progress.json")]
            t1, m1 = measure(
                ours,
                [
                    snakemake,
                    *targets,
                    "-n",
                    "--snakefile",
                    str(REPO / "workflow" / "Snakefile"),
                    "--cores",
                    "1",
                    "--quiet",
                ],
            )
            t2, m2 = measure(
                minimal, [snakemake, "-n", "--cores", "1", "--quiet", "--config", "manifest=manifest.csv"]
            )
            print(
                f"{n:>8} | {t1:8.1f} s {m1:8.0f} MiB | {t2:8.1f} s {m2:8.0f} MiB | "
                f"{t1 / t2:10.3f} | {m1 / m2:12.3f}"
            )
            if n == max(args.sizes):
                call, command, line = progress_timing(ours, n, args.shard_size)
    print(
        f"\nsnakemap progress at {max(args.sizes)} scenes: {call:.3f} s in the function, "
        f"{command:.2f} s as a command"
    )
    print(f"  {line}")


if __name__ == "__main__":
    main()
