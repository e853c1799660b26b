"""Typed options built from the sections of the workflow config (``config/config.yaml``).

The workflow validates the whole config against ``workflow/schemas/config.schema.yaml`` (which
also fills the defaults) and hands each step the sections it needs as JSON; by hand, a step
reads the same YAML file. Defaults here equal the schema's (a test holds them together).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

#: config section -> ``module:class`` of its options; imported on use, so that light steps
#: (acquire, clean, chips) do not pay for importing torch.
SECTIONS: dict[str, str] = {
    "acquire": "snakemap.core.storage:AcquireOptions",
    "bands": "snakemap.data.bands:BandOptions",
    "clean": "snakemap.data.clean:CleanOptions",
    "labels": "snakemap.data.labels:LabelOptions",
    "chips": "snakemap.data.chips:ChipOptions",
    "splits": "snakemap.data.splits:SplitOptions",
    "demo": "snakemap.data.demo:DemoOptions",
    "predict": "snakemap.inference.predict:PredictOptions",
    "apply": "snakemap.plan.shards:ApplyOptions",
    "downscaling": "snakemap.inference.fields:DownscalingOptions",
}


def options_class(section: str) -> type:
    """The options class of a config section."""
    module, name = SECTIONS[section].split(":")
    cls: type = getattr(importlib.import_module(module), name)
    return cls


class ConfigError(ValueError):
    """A config section that cannot be used; the message names the key."""


def build(section: str, values: dict[str, Any] | None) -> Any:
    """Build the options object of ``section`` from its dict, naming any unknown key."""
    cls = options_class(section)
    values = dict(values or {})
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"{section}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def load_sections(
    config_file: str | os.PathLike[str] | None = None, options_json: str | None = None
) -> dict[str, Any]:
    """Read the config YAML (if given), overlay the JSON sections (if given), return a dict."""
    data: dict[str, Any] = {}
    if config_file:
        data.update(yaml.safe_load(Path(config_file).read_text()) or {})
    if options_json:
        data.update(json.loads(options_json))
    return data
