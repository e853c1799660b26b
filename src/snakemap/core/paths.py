"""Where relative paths in a config and a manifest point, and the folder a run writes into.

A run starts in a folder (the *launch folder*: where ``snakemake`` was typed, or
``--directory``) and writes into its ``workdir`` (the config's ``workdir:``, else the launch
folder): ``resources/``, ``results/``, ``logs/``, ``benchmarks/``. A relative path in a config
file or a manifest is looked up beside that file first, then in the launch folder; one found in
neither, or under ``resources/`` or ``results/`` (files the run itself makes, such as the demo's
scenes), is left as written, relative to the workdir. Found paths are handed on relative to the
workdir, so steps that run there find them.

The launch folder and the workdir are kept in the environment (:data:`LAUNCH_ENV`,
:data:`WORKDIR_ENV`) by the run's first read of its config: its steps and cluster jobs, which
read it again, resolve paths the same way and work in the same folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

#: the environment variable that holds the launch folder for the steps a run starts
LAUNCH_ENV = "SNAKEMAP_LAUNCH_DIR"

if TYPE_CHECKING:
    import pandas as pd
#: ... and the one that holds the run's workdir, as its first read of the config chose it
WORKDIR_ENV = "SNAKEMAP_WORKDIR"


def launch_dir() -> Path:
    """The folder the run was started in (the current one, outside a run)."""
    return Path(os.environ.get(LAUNCH_ENV) or os.getcwd())


def is_relative_local(value: Any) -> bool:
    """Whether ``value`` is a relative path on this machine to a file the run does not make
    (:func:`rebasable`)."""
    import pandas as pd  # not at import: `snakemap progress` starts without it

    return isinstance(value, str) and bool(rebasable(pd.Series([value])).iloc[0])


def resolve(value: Any, base: str | os.PathLike[str]) -> Any:
    """``value`` (a path relative to a file in folder ``base``) as the workdir sees it: beside
    the file if it is there, else in the launch folder if it is there, else as written."""
    if not is_relative_local(value):
        return value
    for root in (Path(base), launch_dir()):
        candidate = root / value
        if candidate.exists():
            return os.path.relpath(candidate.absolute())
    return value


def config_paths(config: Mapping[str, Any], base: str | os.PathLike[str]) -> dict[str, Any]:
    """``config`` with its paths (the manifest, reference samples and rasters, an area of
    interest, product baselines' rasters, auxiliary fields, an example catalogue's rasters,
    pretrained weights) resolved from the config file's folder ``base`` (:func:`resolve`)."""
    out = dict(config)
    if "manifest" in config:
        out["manifest"] = resolve(config["manifest"], base)
    areas = config.get("areas")
    if isinstance(areas, Mapping):
        areas = dict(areas)
        if isinstance(areas.get("reference"), Mapping):
            areas["reference"] = {k: resolve(v, base) for k, v in areas["reference"].items()}
        if isinstance(areas.get("reference_raster"), list):
            areas["reference_raster"] = [resolve(v, base) for v in areas["reference_raster"]]
        elif isinstance(areas.get("reference_raster"), str):
            areas["reference_raster"] = resolve(areas["reference_raster"], base)
        if areas.get("aoi") is not None:  # a key left out stays out
            areas["aoi"] = resolve(areas["aoi"], base)
        out["areas"] = areas
    calval = config.get("calval")
    if isinstance(calval, Mapping) and isinstance(calval.get("baselines"), Mapping):
        baselines = {}
        for name, spec in calval["baselines"].items():
            if isinstance(spec, Mapping) and isinstance(spec.get("maps"), Mapping):
                spec = {**spec, "maps": {site: resolve(v, base) for site, v in spec["maps"].items()}}
            baselines[name] = spec
        out["calval"] = {**calval, "baselines": baselines}
    down = config.get("downscaling")
    if isinstance(down, Mapping) and isinstance(down.get("auxiliary"), Mapping):
        out["downscaling"] = {
            **down,
            "auxiliary": {k: resolve(v, base) for k, v in down["auxiliary"].items()},
        }
    catalog = config.get("catalog")
    if isinstance(catalog, Mapping) and isinstance(catalog.get("scenes"), Mapping):
        scenes = {
            name: {
                **scene,
                "image": resolve(scene.get("image"), base),
                "label": resolve(scene.get("label"), base),
            }
            if isinstance(scene, Mapping)
            else scene
            for name, scene in catalog["scenes"].items()
        }
        out["catalog"] = {**catalog, "scenes": scenes}
    models = config.get("models")
    if isinstance(models, Mapping):
        models = dict(models)
        if isinstance(models.get("base"), Mapping):
            models["base"] = _weights(models["base"], base)
        if isinstance(models.get("list"), list):
            models["list"] = [_weights(m, base) if isinstance(m, Mapping) else m for m in models["list"]]
        grid = models.get("grid")
        if isinstance(grid, Mapping) and isinstance(grid.get("encoder_weights"), list):
            grid = dict(grid)
            grid["encoder_weights"] = [resolve(v, base) for v in grid["encoder_weights"]]
            models["grid"] = grid
        out["models"] = models
    return out


def _weights(model: Mapping[str, Any], base: str | os.PathLike[str]) -> dict[str, Any]:
    """A model entry with its ``encoder_weights`` file resolved."""
    if "encoder_weights" not in model:
        return dict(model)
    return {**model, "encoder_weights": resolve(model["encoder_weights"], base)}


#: the folders a run writes under its workdir: a manifest path there is the run's own file
RUN_FOLDERS = ("resources/", "results/")


def rebasable(values: pd.Series) -> pd.Series:
    """Which of a manifest column's values are relative local paths to files the run does not
    make (:func:`is_relative_local`, and not under :data:`RUN_FOLDERS`), as a boolean mask."""
    written = values.astype(str)
    remote = written.str.contains("://", regex=False) | written.str.startswith("file:")
    absolute = written.str.startswith(("/", "~"))
    return (written != "") & ~remote & ~absolute & ~written.str.startswith(RUN_FOLDERS)


def rows_base(manifest: str | os.PathLike[str], first: str | None) -> str | None:
    """The folder a manifest's relative ``uri`` and ``label_uri`` are relative to, as a prefix
    for the workdir (None: as written): beside the manifest where its first relative path is
    there, else the launch folder where it is there (one look for the whole file: a million
    rows are not looked up one by one)."""
    if first is None:
        return None
    for root in (Path(manifest).absolute().parent, launch_dir()):
        if (root / first).exists():
            prefix = os.path.relpath(root)
            return None if prefix == "." else prefix
    return None
