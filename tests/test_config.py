"""The config schema and the package's option classes agree; bad keys are named."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from snakemap.core.config import SECTIONS, ConfigError, build, options_class
from snakemap.data.sensors import SceneTables, SensorOptions
from snakemap.plan.grid import APPLIED_PATTERN, ID_PATTERN, ModelOptions
from snakemap.plan.manifest import SCENE_ID_PATTERN, SHA256_PATTERN
from tests.conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_schema_defaults_equal_option_defaults(section: str) -> None:
    props = SCHEMA["properties"][section]["properties"]
    for f in dataclasses.fields(options_class(section)):
        if not f.init:
            continue
        assert f.name in props, f"{section}.{f.name} is missing from the schema"
        if "default" not in props[f.name]:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert props[f.name]["default"] == default, f"{section}.{f.name}"
    assert set(props) <= {f.name for f in dataclasses.fields(options_class(section))}


def test_model_schema_defaults_equal_model_options() -> None:
    props = SCHEMA["properties"]["models"]["properties"]["base"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(ModelOptions)}
    assert set(props) == set(fields)
    for name, f in fields.items():
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        assert props[name]["default"] == default, name


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"chips: unknown key\(s\) sise"):
        build("chips", {"sise": 32})


def test_bad_label_table_is_named() -> None:
    with pytest.raises(ConfigError, match="maps to 'coral', which is not in labels.classes"):
        build("labels", {"classes": ["a", "b"], "remap": {"1": "coral"}})


def test_demo_config_builds() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for section in SECTIONS:
        if section in config:
            build(section, config[section])


LANDSAT = ["blue", "green", "red", "nir", "swir16", "swir22"]
TABLES = {
    "bands": {"select": ["green", "nir"], "indices": ["ndwi"]},
    "labels": {"classes": ["land", "water"], "remap": {"0": "land", "1": "water"}},
}


def test_sensor_schema_defaults_equal_sensor_options() -> None:
    props = SCHEMA["properties"]["sensors"]["additionalProperties"]["properties"]
    fields = {f.name: f for f in dataclasses.fields(SensorOptions)}
    assert set(props) == set(fields)
    for name, f in fields.items():
        if f.default is not dataclasses.MISSING:
            assert props[name]["default"] == f.default, name


def test_scene_tables_build() -> None:
    cfg = dict(
        TABLES,
        sensors={"s2": {"bands": ["coastal", *LANDSAT], "scale": 0.0001, "nodata": 0}},
        label_schemes={"b": {"3": "water", "7": "ignore"}},
    )
    tables = SceneTables.from_config(cfg)
    assert tables.sensor("s2") == SensorOptions(["coastal", *LANDSAT], 0.0001, 0.0, 0.0)
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
        ({"label_schemes": {"b": {"x": "land"}}}, "label_schemes.b: source value 'x' is not an integer"),
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
    """Each id pattern in the schemas is the package's (a new pattern must be listed here too)."""
    ident, optional_id = f"^{ID_PATTERN}$", f"^({ID_PATTERN})?$"
    name, value = "^[A-Za-z][A-Za-z0-9_]*$", "^-?[0-9]+$"  # band, index and class names; label values
    config = {
        "properties.bands.properties.indices.items.oneOf.1.properties.name": name,
        "properties.sensors.propertyNames": ident,
        "properties.labels.properties.classes.items": name,
        "properties.labels.properties.remap.propertyNames": value,
        "properties.label_schemes.propertyNames": ident,
        "properties.label_schemes.additionalProperties.propertyNames": value,
        "properties.models.properties.base.properties.monitor": "^val_",
        "properties.models.properties.list.items.properties.name": ident,
        "properties.calval.properties.baselines.propertyNames": ident,
        "properties.calval.properties.ensembles.propertyNames": ident,
        "properties.apply.properties.predictors.items": f"^{APPLIED_PATTERN}$",
        "properties.downscaling.properties.auxiliary.propertyNames": name,
        # snakemap.core.storage.AcquireOptions checks the same
        "properties.acquire.properties.endpoint_url": "^https?://",
    }
    manifest = {
        "properties.scene_id": f"^{SCENE_ID_PATTERN}$",
        "properties.sha256": f"^({SHA256_PATTERN})?$",
        "properties.label_sha256": f"^({SHA256_PATTERN})?$",
        "properties.sensor": optional_id,
        "properties.label_scheme": optional_id,
        # four numbers, or empty; snakemap.plan.manifest.parse_bounds checks the same
        "properties.bounds": "^([-+0-9.eE]+,[-+0-9.eE]+,[-+0-9.eE]+,[-+0-9.eE]+)?$",
    }
    assert dict(schema_patterns(SCHEMA)) == config
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
        "snakemap.data.clean",
        "snakemap.data.chips",
        "snakemap.inference.fields",
        "snakemap.evaluation.calval",
        "snakemap.evaluation.report",
        "snakemap.evaluation.winners",
        "snakemap.outputs.progress",
        "snakemap.outputs.stac",
    ]
    code = (
        f"import sys\nfor m in {light!r}: __import__(m)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] == 'torch')[:3])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
