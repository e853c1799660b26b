# Config and manifest checks, tables and input functions shared by the rules.

import json
import os
import shlex
import sys
from snakemake.logging import logger

from snakemap.core.calval_sections import rule_baseline
from snakemap.core.config import ConfigError, build, check_baseline_bands, resolve
from snakemap.core.model_sections import APPLIED_PATTERN, ID_PATTERN, MODEL_KEY_PATTERN
from snakemap.core.paths import LAUNCH_ENV, WORKDIR_ENV, config_paths
from snakemap.core.registry import task_named
from snakemap.core.storage import local_path
from snakemap.plan.grid import PREDICTOR_PATTERN, check_references, learning_params, split_predictor
from snakemap.plan.idle import backend_warnings, idle_warnings
from snakemap.plan.grid import expand as expand_models
from snakemap.plan.manifest import SCENE_ID_PATTERN, read_manifest, scenes_with_role
from snakemap.plan.manifest_cache import CACHE_DIR
from snakemap.data.sensors import SceneTables
from snakemap.data.stac_scenes import is_item
from snakemap.plan.shards import SHARD_PATTERN, ShardTable, check_mask
from snakemap.core.status import SceneStatus

# Jobs call `snakemap`: use the one installed beside this snakemake, activated or not (an
# activated conda environment under --sdm conda still comes first).
os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])

# The typed config (snakemap.core.config): every key checked (a mistake stops the run here, naming
# the section and the key), defaults filled in; --config overrides go through it too.
_RESOLVED = resolve(config)

# The run writes into the config's workdir (under the folder snakemake was started in; --directory
# wins), and the config's relative paths point beside the config file given last, else into that
# folder (snakemap.core.paths). The run's first read decides both and leaves them in the
# environment: its cluster jobs, which read this file again wherever they start, follow it.
os.environ.setdefault(LAUNCH_ENV, os.getcwd())
_CONFIG_DIR = os.path.dirname(
    os.path.join(os.environ[LAUNCH_ENV], (workflow.overwrite_configfiles or workflow.configfiles)[-1])
)
if WORKDIR_ENV not in os.environ:
    _GIVEN = _RESOLVED.get("workdir") if workflow.overwrite_workdir is None else None
    os.environ[WORKDIR_ENV] = os.path.abspath(os.path.join(os.environ[LAUNCH_ENV], _GIVEN or "."))
if os.path.abspath(os.getcwd()) != os.environ[WORKDIR_ENV] and workflow.overwrite_workdir is None:
    workflow.workdir(os.environ[WORKDIR_ENV])
config.clear()
config.update(config_paths(_RESOLVED, _CONFIG_DIR))

# The sensors and label schemes, checked against bands and labels; then the manifest, whose
# messages name the line of each bad row (and of each sensor or label scheme not in the tables).
TABLES = SceneTables.from_config(config)
MANIFEST = read_manifest(
    config["manifest"],
    sensors=TABLES.sensors,
    label_schemes=TABLES.label_schemes,
    labels_required=task_named(config["task"]).labels_required,
    cache=CACHE_DIR,
)


# A config that would train, score or map nothing says so (preparing data alone is a valid run).
for _warning in idle_warnings(config, MANIFEST["role"].value_counts().to_dict()):
    logger.warning(f"snakemap: {_warning}")


# The task (snakemap.core.registry): its rule files score and show the calval sites (see Snakefile)
# and define task_baselines(), report_outputs() and PREVIEWS; every other rule is shared.
TASK = task_named(config["task"])
TRAIN = scenes_with_role(MANIFEST, "train")
CALVAL = scenes_with_role(MANIFEST, "calval")


wildcard_constraints:
    scene=SCENE_ID_PATTERN,


def options(*sections, extra=None):
    """The named config sections (and `extra` keys) as one JSON argument for
    `snakemap <step> --options`. `predict.threads` is left out: it is the jobs' `threads` (a
    resource), and changing it reruns nothing."""
    chosen = {s: config[s] for s in sections if s in config}
    if "predict" in chosen:
        chosen["predict"] = {k: v for k, v in chosen["predict"].items() if k != "threads"}
    return json.dumps({**chosen, **(extra or {})}, sort_keys=True)


def class_colors_option():
    """`{"colors": labels.colors}` where it is set: the class maps' colour tables follow it (a
    colour changes the maps; nothing else of `labels` does). Without it, the default palette."""
    colors = (config.get("labels") or {}).get("colors")
    return {"colors": colors} if colors else {}


def tta_option():
    """`{"predict": {"tta": true}}` where it is set: tuning then scores the probabilities that
    prediction will make (flip-averaged), and turning it on or off tunes again; nothing else of
    `predict` changes a tuning."""
    return {"predict": {"tta": True}} if (config.get("predict") or {}).get("tta") else {}


def colored(*sections):
    """options() of the sections, with the class colours (class_colors_option)."""
    return options(*sections, extra=class_colors_option())


def scene(wildcards):
    """The manifest row of the scene being built."""
    return MANIFEST.loc[wildcards.scene]


def row_tables(rows, columns=("sensor", "label_scheme")):
    """The entries of `sensors` (and `label_schemes`) that manifest rows name, and only those."""
    found = {}
    for column in columns:
        table = {"sensor": "sensors", "label_scheme": "label_schemes"}[column]
        names = sorted(set(rows[column]) - {""})
        if names:
            found[table] = {n: config[table][n] for n in names}
    return found


def acquire_options(wildcards):
    """acquire, and for a STAC Item the bands and its sensor entry (the assets of its bands)."""
    found = {"acquire": config["acquire"]}
    if is_item(scene(wildcards)["uri"]):
        found.update(bands=config["bands"], **row_tables(MANIFEST.loc[[wildcards.scene]], ("sensor",)))
    return json.dumps(found, sort_keys=True)


def clean_options(wildcards):
    """bands, clean and labels plus the scene's own sensor and label scheme, as JSON: changing
    another sensor's entry reruns none of this scene's jobs."""
    found = {s: config[s] for s in ("bands", "clean", "labels", "task", "downscaling") if s in config}
    return json.dumps({**found, **row_tables(MANIFEST.loc[[wildcards.scene]])}, sort_keys=True)


def clean_args(wildcards):
    """--sensor, --label-scheme and --bounds of the scene being built (none for a row without)."""
    row = scene(wildcards)
    flags = {"sensor": "--sensor", "label_scheme": "--label-scheme", "bounds": "--bounds"}
    # --flag=value: bounds west of Greenwich start with a minus sign
    return " ".join(f"{flag}={shlex.quote(row[col])}" for col, flag in flags.items() if row[col])


def local_inputs(wildcards):
    """Local files a scene is copied from, so that changing one reruns its chain."""
    row = scene(wildcards)
    uris = [row["uri"]] + ([row["label_uri"]] if row["label_uri"] else [])
    return [str(p) for p in map(local_path, uris) if p is not None]


def all_outputs(wildcards=None):
    """What `snakemake` builds by default: cleaned scenes, statistics, chips, folds, models, calval
    and the report's tables and figures, the maps; all known before any job runs (see previews)."""
    return (
        expand("results/clean/{scene}", scene=TRAIN + CALVAL)
        + expand("results/chips/{scene}.index.parquet", scene=TRAIN)
        + ["results/stats/bands.json", "results/splits/folds.parquet"]
        + model_outputs()
        + report_outputs()
        + apply_outputs()
        + area_outputs()
        + map_report_outputs()
    )


def preview_outputs(wildcards=None):
    """A preview per calval site whose cleaning ended ok: the only outputs that wait for the clean
    checkpoint, so that a dry run still lists every other job."""
    if not calval_predictors():
        return []
    return expand(PREVIEWS, site=ok_sites())


def model_outputs():
    """Every job's best checkpoint, its bundle and a network's ONNX export, and the table of
    models (nothing without `models:`)."""
    if not JOBS:
        return []
    return (
        expand("results/models/{model}/best.ckpt", model=JOBS)
        + expand("results/bundles/{model}.zip", model=JOBS)
        + [f"results/bundles/{key}.onnx" for key, j in JOBS.items() if has_onnx(j)]
        + ["results/models/models.tsv"]
    )


def has_onnx(model_job):
    """Whether a training job's model has an ONNX export (a network; a booster has none)."""
    return model_job.params.get("family", "network") == "network"


# Training jobs from the model grid: key "id" or "id/fold{k}" -> snakemap.plan.grid.ModelJob
JOBS = (
    {j.key: j for j in expand_models(config["models"], config["splits"]["folds"])}
    if "models" in config
    else {}
)


# An ensemble member or applied predictor that names a model the grid does not make stops here.
check_references(config, JOBS)

# The predict section, typed: the backend, quantization and threads of every prediction job.
PREDICT = build("predict", config["predict"])

# A booster has no ONNX graph: with predict.backend: onnxruntime it runs in LightGBM, and says so.
for _warning in backend_warnings(PREDICT, {k: j.params.get("family", "network") for k, j in JOBS.items()}):
    logger.warning(f"snakemap: {_warning}")


wildcard_constraints:
    model=MODEL_KEY_PATTERN,


def job(wildcards):
    """The training job being built."""
    return JOBS[wildcards.model]


def job_json(wildcards):
    """What a job learns: changing it reruns that job alone. Its resources (gpus, cpus, mem_mb,
    runtime) are not in it: raising them after a timeout reruns nothing, and a killed job resumes."""
    j = job(wildcards)
    return json.dumps({"params": learning_params(j.params), "fold": j.fold}, sort_keys=True)


def calval_chips(wildcards):
    """Chip tables of the calval scenes, for jobs that validate on them."""
    if job(wildcards).params["validation"] != "calval":
        return []
    return expand("results/chips/{scene}.index.parquet", scene=CALVAL)


# Calval: models' checkpoints, ensembles and baselines, each scored at the calval sites.
CV = config["calval"]
# A rule baseline that reads a band the calval sites' cleaned bands lack stops the run here.
check_baseline_bands(
    CV,
    TABLES.cleaned_bands(
        build("bands", config["bands"]),
        build("clean", config["clean"]).qa_band,
        MANIFEST.loc[CALVAL, "sensor"].unique() if CALVAL else [],
    ),
)
ENSEMBLES = CV["ensembles"]
BASELINES = CV["baselines"]


wildcard_constraints:
    site=SCENE_ID_PATTERN,
    ensemble=ID_PATTERN,
    baseline=ID_PATTERN,
    predictor=PREDICTOR_PATTERN,


def calval_predictors():
    """Every predictor to score: checkpoints of each model, then the task's own (its rule file's
    task_baselines(): ensembles and baselines, or interpolations at each model's scale)."""
    if not CALVAL:
        return []
    return [f"models/{key}/{ck}" for key in JOBS for ck in CV["checkpoints"]] + task_baselines()


def ok_sites(wildcards=None):
    """Calval sites whose cleaning ended ok (known once `clean` has run for them): for previews
    only; every other calval job covers every site, and the package skips the sites not ok."""
    return [
        s
        for s in CALVAL
        if SceneStatus.read(os.path.join(checkpoints.clean.get(scene=s).output[0], "status.json")).status
        == "ok"
    ]


def ensemble_checkpoints(wildcards):
    """The members' checkpoints of an ensemble, in the config's order."""
    return members_checkpoints(wildcards.ensemble)


def members_checkpoints(name):
    """The checkpoints of an ensemble's model members (its rule members have none)."""
    return [member_checkpoint(name, m) for m in ENSEMBLES[name]["members"] if not is_rule(m)]


def member_checkpoint(name, member):
    """The checkpoint an ensemble's model member predicts with."""
    return f"results/models/{member}/{ENSEMBLES[name]['checkpoint']}.ckpt"


def is_rule(member):
    """An ensemble member that is a rule baseline (`baselines/{name}`), not a model."""
    return rule_baseline(member) is not None


def ensemble_args(wildcards):
    """--weight per member, and a fixed threshold on the single target class if any."""
    return members_args(wildcards.ensemble)


def members_args(name):
    ens = ENSEMBLES[name]
    args = [f"--weight {w}" for m, w in ens["members"].items() if not is_rule(m)]
    for member, weight in ens["members"].items():
        if is_rule(member):
            member_spec = {
                "name": member,
                "weight": weight,
                "spec": BASELINES[rule_baseline(member)],
            }
            args.append(f"--rule {shlex.quote(json.dumps(member_spec, sort_keys=True))}")
    if isinstance(ens["threshold"], (int, float)):
        args.append(f"--threshold {ens['threshold']} --target {single_target()}")
    return " ".join(args)


def fallback_args(name):
    """--fallback-shift and a --fallback-member per member of an ensemble's fallback (the members
    that alone map a scene unlike the training data); none without one. Tuning never sees it."""
    ens = ENSEMBLES[name]
    if not ens.get("fallback"):
        return ""
    args = [f"--fallback-shift {ens['fallback']['shift']}"]
    for member in ens["fallback"]["members"]:
        path = member if is_rule(member) else member_checkpoint(name, member)
        args.append(f"--fallback-member {shlex.quote(path)}")
    return " ".join(args)


def single_target():
    """The one target class that thresholds and PR curves refer to."""
    labels = config["labels"]
    target = labels.get("target") or labels["classes"][1:]
    if len(target) != 1:
        raise ValueError(f"a threshold needs exactly one labels.target class, got {target}")
    return target[0]


def metrics_inputs(wildcards):
    """Class maps (and probabilities) of a predictor at every calval site, and the sites' clean
    folders (status and labels): `calval-metrics` scores the sites whose status is ok."""
    found = {
        "maps": expand(f"results/calval/{wildcards.predictor}/{{site}}.tif", site=CALVAL),
        "clean": expand("results/clean/{site}", site=CALVAL),
    }
    if split_predictor(wildcards.predictor)[0] != "baselines":
        found["probs"] = expand(f"results/calval/{wildcards.predictor}/probs/{{site}}.tif", site=CALVAL)
    return found


def tuned_threshold(kind, name):
    """An ensemble's out-of-fold threshold.json, when its threshold is `tune`."""
    if kind == "ensembles" and ENSEMBLES[name]["threshold"] == "tune":
        return [f"results/ensembles/{name}/threshold.json"]
    return []


def tuned_winners(kind, name):
    """A per-class ensemble's out-of-fold winners.json (`combine: per_class`)."""
    if kind == "ensembles" and ENSEMBLES[name].get("combine") == "per_class":
        return [f"results/ensembles/{name}/winners.json"]
    return []


def tuned_weights(kind, name):
    """An ensemble's out-of-fold weights.json, when its weights are `tune`."""
    if kind == "ensembles" and ENSEMBLES[name].get("weights") == "tune":
        return [f"results/ensembles/{name}/weights.json"]
    return []


def ensemble_precedence(wildcards):
    """--precedence of a per-class ensemble that gives one."""
    precedence = ENSEMBLES[wildcards.ensemble].get("precedence")
    return f"--precedence {shlex.quote(json.dumps(precedence))}" if precedence else ""


def predictor_threshold(wildcards):
    """The tuned threshold.json a calval predictor's maps were made with (if any)."""
    return tuned_threshold(*split_predictor(wildcards.predictor))


def threshold_args(wildcards, input):
    """--threshold-from (and --target) for a tuned ensemble's prediction or scores."""
    if not input.get("tuned"):
        return ""
    return f"--threshold-from {input.tuned[0]} --target {single_target()}"


def selection(wildcards):
    """How a predictor's checkpoints were chosen: on held-out folds, or (opt-in) on calval."""
    kind, name = split_predictor(wildcards.predictor)
    if kind == "baselines":
        return "fixed rule"
    keys = (
        [os.path.dirname(name)]
        if kind == "models"
        else [m for m in ENSEMBLES[name]["members"] if not is_rule(m)]
    )
    on_calval = any(JOBS[k].params["validation"] == "calval" for k in keys)
    return "calval" if on_calval else "held-out fold"


def baseline_maps(wildcards):
    """A product baseline's raster of this site (nothing for an index rule)."""
    maps = BASELINES[wildcards.baseline].get("maps") or {}
    return [maps[wildcards.site]] if wildcards.site in maps else []


# Application: apply scenes in shards; one job per shard and predictor.
APPLY = config["apply"]
# `snakemake --forcerun apply_shard --config retry_corrupt=true`: each shard retries its corrupt
# scenes. A one-off flag: a resource of the job, not a parameter, so the next plain run reruns
# nothing.
RETRY_CORRUPT = int(bool(config["retry_corrupt"]))  # resources are numbers
APPLY_SHARDS = ShardTable(MANIFEST, APPLY["shard_size"])
APPLY_SCENES = APPLY_SHARDS.scene_ids
SHARDS = APPLY_SHARDS.ids
# apply.buffer reads neighbours through a VRT of the apply scenes' files: STAC Items have none.
if APPLY["buffer"] and any(is_item(u) for u in APPLY_SHARDS.rows["uri"]):
    raise ConfigError(
        "apply.buffer: neighbours are read through a VRT of the apply scenes' files, and STAC Item "
        "scenes are not files: set apply.buffer to 0 for a manifest of items"
    )
# A mask band that the apply scenes' cleaned bands lack stops the run here, naming the key.
check_mask(
    APPLY["mask"],
    TABLES.cleaned_bands(
        build("bands", config["bands"]),
        build("clean", config["clean"]).qa_band,
        APPLY_SHARDS.rows["sensor"].unique(),
    ),
)


wildcard_constraints:
    shard=SHARD_PATTERN,


def shard_fingerprint(wildcards):
    """Changes when the shard's scenes (ids, URIs, checksums) change: then it reruns."""
    return APPLY_SHARDS.fingerprint(wildcards.shard)


def shard_options(wildcards):
    """bands, clean, predict, apply and acquire plus the sensors of the shard's scenes, as JSON."""
    sections = ("bands", "clean", "predict", "apply", "acquire", "task", "downscaling")
    found = {s: config[s] for s in sections if s in config}
    if VECTORIZE:  # polygons of each scene: the section and the classes' names
        found.update(vectorize=VECTORIZE, labels=config["labels"])
    found.update(class_colors_option())
    names = APPLY_SHARDS.sensors(wildcards.shard)
    if names:
        found["sensors"] = {n: config["sensors"][n] for n in names}
    return json.dumps(found, sort_keys=True)


CATALOG = config.get("catalog")


def demo_files(uris):
    """The embedded demo's scenes and an example catalogue's items among apply `uris`: files a
    rule writes. Real apply scenes are not inputs of the DAG (a shard reads them itself), which
    keeps planning fast at a million."""
    made = (("resources/demo/",) if config.get("demo") else ()) + (("resources/catalog/",) if CATALOG else ())
    return [u for u in uris if made and u.startswith(made)]


def demo_scenes(wildcards):
    """The embedded demo's (or an example catalogue's) apply scenes of a shard."""
    return demo_files(APPLY_SHARDS.column(wildcards.shard, "uri"))


def apply_demo_scenes(wildcards):
    """The embedded demo's (or an example catalogue's) apply scenes, for the VRT of all apply inputs."""
    return demo_files(APPLY_SHARDS.rows["uri"])


def apply_vrt(wildcards):
    """The VRT of all apply scenes that `apply.buffer` reads neighbours from (none without a
    buffer). Ancient: adding scenes rebuilds it without rerunning the finished shards."""
    return [ancient("results/maps/inputs.vrt")] if APPLY["buffer"] else []


def vrt_args(wildcards, input):
    """--vrt of an apply shard with a buffer."""
    return f"--vrt {shlex.quote(input.vrt[0])}" if input.vrt else ""


def onnx_export(checkpoint):
    """What ONNX Runtime runs for a model checkpoint with `predict.backend: onnxruntime`: its ONNX
    export, or that export quantized to int8 (`predict.quantize: int8`); None for a booster (it
    runs in LightGBM) or with the torch backend."""
    if PREDICT.backend != "onnxruntime":
        return None
    key, name = os.path.split(checkpoint.removeprefix("results/models/"))
    if not has_onnx(JOBS[key]):
        return None
    stem = name.removesuffix(".ckpt")
    return f"results/models/{key}/{stem}{'.int8' if PREDICT.quantize == 'int8' else ''}.onnx"


def predictor_inputs(wildcards):
    """Checkpoints of a model or ensemble predictor (and the networks' ONNX exports with
    `predict.backend: onnxruntime`), and an ensemble's threshold.json when tuned, winners.json
    when it combines per class, weights.json when its weights are tuned."""
    kind, name = split_predictor(wildcards.predictor)
    if kind == "models":
        ckpts = [f"results/models/{name}.ckpt"]
        found = {"ckpts": ckpts, "tuned": [], "winners": [], "weights": []}
    else:
        ckpts = members_checkpoints(name)
        found = {
            "ckpts": ckpts,
            "tuned": tuned_threshold(kind, name),
            "winners": tuned_winners(kind, name),
            "weights": tuned_weights(kind, name),
        }
    found["onnx"] = [o for o in map(onnx_export, ckpts) if o]
    return found


def predictor_args(wildcards, input):
    """--checkpoint (and --weight, --threshold or --threshold-from, --onnx-model) of a model or
    ensemble."""
    args = [f"--checkpoint {c}" for c in input.ckpts]
    args += [f"--onnx-model {c}={onnx}" for c in input.ckpts if (onnx := onnx_export(c))]
    kind, name = split_predictor(wildcards.predictor)
    if kind == "ensembles":
        args += [members_args(name), threshold_args(wildcards, input)]
        if fallback := fallback_args(name):  # only then: an empty part would change the params
            args.append(fallback)
        if input.get("winners"):
            args.append(f"--winners-from {input.winners[0]}")
        if input.get("weights"):
            args.append(f"--weights-from {input.weights[0]}")
    return " ".join(args)


def apply_outputs(wildcards=None):
    """Per applied predictor: its mosaics, progress and STAC collection (nothing without apply scenes)."""
    if not APPLY_SCENES:
        return []
    return expand(
        "results/maps/{predictor}/{f}",
        predictor=APPLY["predictors"],
        f=["mosaic", "progress.json", "collection.json"],
    ) + [f for p in APPLY["predictors"] for f in polygon_outputs(p)]


AREAS = config.get("areas")
VECTORIZE = config.get("vectorize")


def polygon_part():
    """A shard's part of its predictor's polygons (with `vectorize:`)."""
    return ["results/maps/{predictor}/polygons/parts/{shard}.parquet"] if VECTORIZE else []


def polygon_outputs(predictor):
    """A predictor's merged polygons (with `vectorize:`): GeoParquet and GeoPackage."""
    if not VECTORIZE:
        return []
    return [f"results/maps/{predictor}/polygons.parquet", f"results/maps/{predictor}/polygons.gpkg"]


def map_report_outputs():
    """Per applied predictor its quicklook, and the page of progress and areas of them all."""
    if not APPLY_SCENES or not APPLY["predictors"]:
        return []
    return expand("results/reports/maps/{predictor}.png", predictor=APPLY["predictors"]) + [
        "results/reports/maps.html"
    ]


def area_files():
    """predictor -> its areas.csv, for the predictors that have one (see area_outputs)."""
    if not AREAS or not APPLY_SCENES:
        return {}
    return {p: f"results/maps/{p}/areas.csv" for p in APPLY["predictors"] if reference_of(p)}


# The text `snakemake --report` opens on: once the run wrote it (the workflow's description and
# the best predictor per class), else the description alone.
LANDING = "results/reports/landing.rst"


def landing_text():
    return os.path.abspath(LANDING) if os.path.exists(LANDING) else "report/workflow.rst"


def area_outputs():
    """Per applied predictor with `areas:`: its reference sample to label, and its areas where a
    labelled sample is known (`areas.reference`, or one the workflow labels from
    `areas.reference_raster`)."""
    if not AREAS or not APPLY_SCENES:
        return []
    found = expand("results/maps/{predictor}/sample.gpkg", predictor=APPLY["predictors"])
    return found + [f"results/maps/{p}/areas.csv" for p in APPLY["predictors"] if reference_of(p)]


def sample_section():
    """The `areas` keys that decide the sample (not the reference files, which label it)."""
    return {k: v for k, v in AREAS.items() if k not in ("reference", "reference_raster")}


def reference_of(predictor):
    """The labelled sample of a predictor's map: given, labelled here, or none."""
    if predictor in AREAS["reference"]:
        return AREAS["reference"][predictor]
    if AREAS.get("reference_raster"):
        return f"results/maps/{predictor}/reference.gpkg"
    return None


def predictor_bundle(wildcards):
    """The ONNX export of a model predictor (named by its maps' STAC items), or the bundle of a
    model without one; none for ensembles."""
    kind, name = split_predictor(wildcards.predictor)
    key, checkpoint = os.path.split(name)
    if kind == "models" and checkpoint == "best":
        return [f"results/bundles/{key}.{'onnx' if has_onnx(JOBS[key]) else 'zip'}"]
    return []
