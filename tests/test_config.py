"""The config schema and the package's option classes agree; bad keys are named."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from snakemap.core.config import SECTIONS, ConfigError, build, config_schema, load_config, resolve
from snakemap.core.model_sections import ID_PATTERN
from snakemap.core.sections import SensorOptions
from snakemap.data.sensors import SceneTables
from snakemap.plan.manifest import SCENE_ID_PATTERN, SHA256_PATTERN
from tests.conftest import REPO

SCHEMA_FILE = REPO / "workflow" / "schemas" / "config.schema.json"


def test_the_committed_schema_is_the_generated_one() -> None:
    """workflow/schemas/config.schema.json is what `snakemap config-schema` prints (regenerate it
    with `snakemap config-schema > workflow/schemas/config.schema.json`)."""
    assert json.loads(SCHEMA_FILE.read_text()) == config_schema()
    out = subprocess.run(
        [sys.executable, "-m", "snakemap", "config-schema"], capture_output=True, text=True, check=True
    ).stdout
    assert out == SCHEMA_FILE.read_text()


def test_configs_resolve_as_the_golden_file_says(request: pytest.FixtureRequest) -> None:
    """The demo and the examples resolve to tests/golden/resolved_configs.yaml: what snakemake's
    JSON-schema validation gave before the typed config (and, for an example changed since, what
    `--update-golden` stored after a review), so the options each rule passes keep their text and
    a finished run reruns nothing."""
    golden_file = REPO / "tests" / "golden" / "resolved_configs.yaml"
    paths = sorted(str(p.relative_to(REPO)) for p in (REPO / "config").rglob("*.yaml"))
    resolved = {path: resolve(yaml.safe_load((REPO / path).read_text())) for path in paths}
    if request.config.getoption("--update-golden"):
        golden = yaml.safe_load(golden_file.read_text())
        changed = {
            p: r
            for p, r in resolved.items()
            if json.dumps(r, sort_keys=True) != json.dumps(golden.get(p), sort_keys=True)
        }
        header = "".join(line + "\n" for line in golden_file.read_text().splitlines() if line.startswith("#"))
        golden_file.write_text(header + yaml.safe_dump({**golden, **changed}, sort_keys=True))
    golden = yaml.safe_load(golden_file.read_text())
    assert sorted(golden) == paths
    for path, expected in golden.items():
        assert json.dumps(resolved[path], sort_keys=True) == json.dumps(expected, sort_keys=True), path


def test_a_resolved_config_keeps_numbers_as_given_and_omits_what_has_no_default() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["clean"] = {"qa": {"band": "qa", "bits": [1]}}
    config["acquire"] = {"timeout_s": 10}
    resolved = resolve(config)
    assert resolved["clean"]["qa"] == {"band": "qa", "bits": [1]}  # no values: none given
    assert resolved["acquire"]["timeout_s"] == 10 and isinstance(resolved["acquire"]["timeout_s"], int)
    assert resolved["apply"]["mask"] == {"band": "ndwi", "min": -0.1, "max": 1.0}
    assert "models" in resolved and "demo" in resolved and "label_schemes" in resolved
    assert resolve({**config, "retry_corrupt": "true"})["retry_corrupt"] is True  # --config k=v


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"chips": {"sise": 32}}, "chips: unknown key(s) sise; known: background_fraction"),
        ({"models": {"base": {"lr": 0}}}, "models.base.lr: must be > 0, got 0"),
        (
            {"models": {"base": {"folds": "some"}}},
            "models.base.folds: Input should be 'all' or Input should be a",
        ),
        (
            {"calval": {"ensembles": {"e": {"members": {"a": 1}, "thresold": 0.5}}}},
            "calval.ensembles.e: unknown key",
        ),
        ({"apply": {"predictors": ["models/x"]}}, "apply.predictors.0: String should match pattern"),
        ({"labels": None}, "labels: given empty (null)"),
        ({"models": None}, "models: given empty (null)"),
        ({"calval": {"baselines": {"p": {"maps": None}}}}, "calval.baselines.p: maps: given empty (null)"),
        ({"retry_corrupt": "maybe"}, "retry_corrupt: Input should be a valid boolean"),
        ({"acquire": {"endpoint_url": "ftp://x"}}, "acquire.endpoint_url: String should match pattern"),
        ({"sensors": {"s2": {"bands": ["a", "a"]}}}, "sensors.s2.bands: band name(s) a given more than once"),
        ({"label_schemes": {"b": {"3": "coral"}}}, "label_schemes.b: value 3 maps to 'coral'"),
        ({"calval": {"checkpoints": ["best", "best"]}}, "calval.checkpoints: best given more than once"),
        ({"task": "classification"}, "task: 'classification' is no task; known: segmentation, downscaling"),
        (  # the demo's baseline in a config whose classes say clear_land
            {"labels": {"classes": ["clear_land", "water", "reef", "cloud"], "remap": {0: "clear_land"}}},
            "calval.baselines.ndwi_water: 'land' not in labels.classes (clear_land, water, reef, cloud)",
        ),
        ({"labels": {"classes": ["land", "water"], "remap": {}, "colors": {"lnd": "red"}}}, "labels.colors"),
    ],
)
def test_a_config_mistake_names_its_section_and_key(change: dict[str, Any], message: str) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    with pytest.raises(ConfigError) as err:
        load_config({**config, **change})
    assert message in str(err.value)


def test_labels_are_required_by_a_task_that_learns_from_them() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    del config["labels"]
    with pytest.raises(ConfigError, match="labels: required .* for task segmentation"):
        load_config(config)
    # product baselines with YAML's int keys, NaN nodata and open mask bounds, as the old schema took
    config["labels"] = {"classes": ["land", "reef"], "remap": {0: "land", 1: "reef"}}
    config["calval"] = {"baselines": {"allen": {"maps": {"s1": "a.tif"}, "remap": {1: "reef", 0: "land"}}}}
    config["clean"] = {"nodata": float("nan")}
    config["apply"] = {"mask": {"band": "ndwi", "min": float("-inf")}}
    with pytest.raises(
        ConfigError, match="areas: estimates the areas of applied maps, and apply.predictors is empty"
    ):
        resolve(config)
    del config["areas"]
    resolved = resolve(config)
    assert resolved["calval"]["baselines"]["allen"]["remap"] == {1: "reef", 0: "land"}
    assert resolved["apply"]["mask"]["min"] == float("-inf")


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"chips: unknown key\(s\) sise"):
        build("chips", {"sise": 32})


def test_bad_label_table_is_named() -> None:
    with pytest.raises(ConfigError, match="maps to 'coral', which is not in labels.classes"):
        build("labels", {"classes": ["a", "b"], "remap": {"1": "coral"}})


def test_demo_config_builds() -> None:
    config = resolve(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    for section in SECTIONS:
        if config.get(section) is not None:  # an optional section left out resolves to null
            assert build(section, config[section]).resolved() == config[section]


LANDSAT = ["blue", "green", "red", "nir", "swir16", "swir22"]
TABLES = {
    "bands": {"select": ["green", "nir"], "indices": ["ndwi"]},
    "labels": {"classes": ["land", "water"], "remap": {"0": "land", "1": "water"}},
}


def test_scene_tables_build() -> None:
    cfg = dict(
        TABLES,
        sensors={"s2": {"bands": ["coastal", *LANDSAT], "scale": 0.0001, "nodata": 0}},
        label_schemes={"b": {"3": "water", "7": "ignore"}},
    )
    tables = SceneTables.from_config(cfg)
    assert tables.sensor("s2") == SensorOptions(bands=["coastal", *LANDSAT], scale=0.0001, nodata=0)
    assert tables.sensor("s2").scaling(0) == (0.0001, 0.0)  # type: ignore[union-attr]  # offset 0 with a scale
    assert tables.sensor("") is None
    assert tables.scene_labels("b").table == {3: 1, 7: 255}  # type: ignore[union-attr]
    assert tables.scene_labels("") is tables.labels and tables.labels.table == {0: 0, 1: 1}  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match=r"sensors: no entry 'l8' \(known: s2\)"):
        tables.sensor("l8")


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"sensors": {"s2": {"bands": "blue"}}}, "sensors.s2.bands: expected a non-empty list of band names"),
        ({"sensors": {"s2": {"bands": []}}}, "sensors.s2.bands: expected a non-empty list of band names"),
        (
            {"sensors": {"s2": {"bands": ["green", "nir", "green"]}}},
            "sensors.s2.bands: band name(s) green given more than once",
        ),
        ({"sensors": {"s2": {"bands": LANDSAT, "gain": 2}}}, "sensors.s2: unknown key(s) gain"),
        ({"sensors": {"s2": {"bands": LANDSAT, "scale": 0}}}, "sensors.s2.scale: must not be 0"),
        (
            {"sensors": {"s2": {"bands": LANDSAT, "offset": "x"}}},
            "sensors.s2.offset: expected a finite number",
        ),
        (
            {"sensors": {"s2": {"bands": ["green", "red"]}}},
            "sensors.s2.bands: sensor s2 has no band 'nir', which bands.select keeps (its bands: green, red)",
        ),
        (
            {"bands": {"select": ["green"], "indices": ["ndwi"]}, "sensors": {"s2": {"bands": ["green"]}}},
            "sensors.s2.bands: sensor s2 has no band 'nir', which index ndwi needs",
        ),
        (
            {"bands": {"select": [5]}, "sensors": {"s2": {"bands": ["green", "nir"]}}},
            "sensors.s2.bands: sensor s2 has 2 bands, bands.select keeps band 5",
        ),
        (
            {"bands": {}, "sensors": {"a": {"bands": LANDSAT}, "b": {"bands": ["coastal", *LANDSAT]}}},
            "bands.select is null and keeps every band, "
            "but sensors.a.bands, sensors.b.bands list different bands",
        ),
        (
            {"label_schemes": {"b": {"3": "coral"}}},
            "label_schemes.b: value 3 maps to 'coral', "
            "which is not in labels.classes (land, water) nor 'ignore'",
        ),
        ({"label_schemes": {"b": {"": "land"}}}, "label_schemes.b: an empty source value"),
    ],
)
def test_bad_scene_tables_are_named(tables: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SceneTables.from_config({**TABLES, **tables})
    assert message in str(err.value)


def test_example_configs_build_their_tables() -> None:
    for path in (REPO / "config").rglob("*.yaml"):
        SceneTables.from_config(yaml.safe_load(path.read_text()))


def schema_patterns(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """Every ``pattern`` in a JSON schema, keyed by its dotted path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield ".".join(path), value
            else:
                yield from schema_patterns(value, (*path, str(key)))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from schema_patterns(value, (*path, str(i)))


def test_schema_patterns_are_the_packages() -> None:
    """Each pattern of the manifest schema is the package's (a new pattern must be listed here too;
    the config's schema is generated from the package's types)."""
    optional_id = f"^({ID_PATTERN})?$"
    manifest = {
        "properties.scene_id": f"^{SCENE_ID_PATTERN}$",
        "properties.sha256": f"^({SHA256_PATTERN})?$",
        "properties.label_sha256": f"^({SHA256_PATTERN})?$",
        "properties.sensor": optional_id,
        "properties.label_scheme": optional_id,
        # four numbers, or empty; snakemap.plan.manifest_fields.parse_bounds checks the same
        "properties.bounds": "^([-+0-9.eE]+,[-+0-9.eE]+,[-+0-9.eE]+,[-+0-9.eE]+)?$",
    }
    manifest_schema = yaml.safe_load((REPO / "workflow" / "schemas" / "manifest.schema.yaml").read_text())
    assert dict(schema_patterns(manifest_schema)) == manifest


def test_light_steps_do_not_import_torch() -> None:
    """The local rules on a login node (summaries, reports, progress, manifest and config checks,
    downscaling scores) run without loading torch: the modules they import must not pull it in."""
    import subprocess
    import sys

    light = [
        "snakemap.cli",
        "snakemap.core.config",
        "snakemap.plan.grid",
        "snakemap.plan.manifest",
        "snakemap.plan.manifest_cache",
        "snakemap.data.clean",
        "snakemap.data.chips",
        "snakemap.inference.fields",
        "snakemap.evaluation.calval",
        "snakemap.evaluation.report",
        "snakemap.evaluation.winners",
        "snakemap.outputs.progress",
        "snakemap.outputs.stac",
        "snakemap.outputs.stac_collection",
        "snakemap.outputs.stac_model",
    ]
    code = (
        f"import sys\nfor m in {light!r}: __import__(m)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'torch')[:3])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_config_paths_resolve_beside_the_file_then_in_the_launch_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from snakemap.core.paths import LAUNCH_ENV, config_paths

    launch, configs, work = tmp_path / "project", tmp_path / "project" / "config", tmp_path / "work"
    for folder in (configs, work):
        folder.mkdir(parents=True)
    (configs / "mine.csv").write_text("scene_id,uri,role\n")
    (launch / "weights.pth").write_bytes(b"")
    monkeypatch.setenv(LAUNCH_ENV, str(launch))
    monkeypatch.chdir(work)  # the run's workdir: paths come back relative to it
    config = {
        "manifest": "mine.csv",  # beside the config
        "models": {"base": {"encoder_weights": "weights.pth"}},  # in the launch folder
        "areas": {"reference_raster": "made/by/the/run.tif"},  # nowhere yet: as written
        "calval": {"baselines": {"p": {"maps": {"s1": "https://example.org/p.tif"}}}},  # a URL: as is
    }
    resolved = config_paths(config, configs)
    assert resolved["manifest"] == "../project/config/mine.csv"
    assert resolved["models"]["base"]["encoder_weights"] == "../project/weights.pth"
    assert resolved["areas"] == {"reference_raster": "made/by/the/run.tif"}  # no aoi key added
    assert resolved["calval"]["baselines"]["p"]["maps"]["s1"] == "https://example.org/p.tif"
    assert config["manifest"] == "mine.csv"  # the given config is left as it was
