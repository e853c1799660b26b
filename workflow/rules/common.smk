# Config and manifest checks, tables and input functions shared by the rules.

import json
import urllib.parse

from snakemake.utils import validate

from snakemap.manifest import SCENE_ID_PATTERN, read_manifest, scenes_with_role


validate(config, "../schemas/config.schema.yaml")

# The package checks the manifest first: its messages name the line of each bad row.
MANIFEST = read_manifest(config["manifest"])
validate(MANIFEST, "../schemas/manifest.schema.yaml")

TRAIN = scenes_with_role(MANIFEST, "train")
CALVAL = scenes_with_role(MANIFEST, "calval")


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
    """What `snakemake` builds by default: cleaned scenes, statistics, chips and folds."""
    return (
        expand("results/clean/{scene}", scene=TRAIN + CALVAL)
        + expand("results/chips/{scene}.index.parquet", scene=TRAIN)
        + ["results/stats/bands.json", "results/splits/folds.parquet"]
    )
