# Config and manifest checks, tables and input functions shared by the rules.

import json
import os
import sys
import urllib.parse

from snakemake.utils import validate

from snakemap.grid import ID_PATTERN
from snakemap.grid import expand as expand_models
from snakemap.manifest import SCENE_ID_PATTERN, read_manifest, scenes_with_role


# Jobs call `snakemap`: use the one installed beside this snakemake, activated or not (an
# activated conda environment under --sdm conda still comes first).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

validate(config, "../schemas/config.schema.yaml")

# The package checks the manifest first: its messages name the line of each bad row.
MANIFEST = read_manifest(config["manifest"])
validate(MANIFEST, "../schemas/manifest.schema.yaml")

TRAIN = scenes_with_role(MANIFEST, "train")
CALVAL = scenes_with_role(MANIFEST, "calval")
MODEL_KEY_PATTERN = rf"{ID_PATTERN}(/fold[0-9]+)?"


wildcard_constraints:
    scene=SCENE_ID_PATTERN,


def options(*sections):
    """The named config sections as one JSON argument for `snakemap <step> --options`."""
    return json.dumps({s: config[s] for s in sections if s in config}, sort_keys=True)


def scene(wildcards):
    """The manifest row of the scene being built."""
    return MANIFEST.loc[wildcards.scene]


def local_inputs(wildcards):
    """Local files a scene is copied from, so that changing one reruns its chain."""
    row = scene(wildcards)
    uris = [row["uri"]] + ([row["label_uri"]] if row["label_uri"] else [])
    return [
        urllib.parse.urlparse(u).path if u.startswith("file://") else u
        for u in uris
        if urllib.parse.urlparse(u).scheme in ("", "file")
    ]


def all_outputs():
    """What `snakemake` builds by default: cleaned scenes, statistics, chips, folds, models."""
    return (
        expand("results/clean/{scene}", scene=TRAIN + CALVAL)
        + expand("results/chips/{scene}.index.parquet", scene=TRAIN)
        + ["results/stats/bands.json", "results/splits/folds.parquet"]
        + model_outputs()
    )


def model_outputs():
    """Every job's best checkpoint and the table of models (nothing without `models:`)."""
    if not JOBS:
        return []
    return expand("results/models/{model}/best.ckpt", model=JOBS) + ["results/models/models.tsv"]


# Training jobs from the model grid: key "id" or "id/fold{k}" -> snakemap.grid.ModelJob
JOBS = (
    {j.key: j for j in expand_models(config["models"], config["splits"]["folds"])}
    if "models" in config
    else {}
)


wildcard_constraints:
    model=MODEL_KEY_PATTERN,


def job(wildcards):
    """The training job being built."""
    return JOBS[wildcards.model]


def job_json(wildcards):
    """A job's own parameters: changing them reruns that job alone."""
    j = job(wildcards)
    return json.dumps({"params": j.params, "fold": j.fold}, sort_keys=True)


def calval_chips(wildcards):
    """Chip tables of the calval scenes, for jobs that validate on them."""
    if job(wildcards).params["validation"] != "calval":
        return []
    return expand("results/chips/{scene}.index.parquet", scene=CALVAL)
