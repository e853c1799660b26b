"""The config schema and the package's option classes agree; bad keys are named."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from snakemap.config import SECTIONS, ConfigError, build, options_class
from snakemap.grid import ModelOptions
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
