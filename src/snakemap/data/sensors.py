"""Sensors and label schemes: the config tables that a manifest row's ``sensor`` and
``label_scheme`` columns name, so that scenes of several sensors and datasets mix in one run.

``sensors:`` maps a name to how that sensor's files are stored::

    sensors:
      s2l1c: {bands: [coastal, blue, green, red, ..., swir16, swir22], scale: 0.0001, offset: -0.1, nodata: 0}
      landsat_toa: {bands: [blue, green, red, nir, swir16, swir22]}

A scene of a sensor is read with the sensor's band names (file order; also the expected band
count), its stored values turned into reflectance (``value * scale + offset``, every source band
but a QA band, before indices are computed) and the sensor's nodata value. Every scene then cleans
to the same bands, ``bands.select`` (by name) plus ``bands.indices``, whatever its sensor.

``label_schemes:`` maps a name to a remap table ``{source value: class name}`` exactly like
``labels.remap``; a scene with a scheme is remapped with it instead of ``labels.remap``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from snakemap.core.config import ConfigError, build, message
from snakemap.core.label_sections import LabelOptions
from snakemap.core.sections import BandOptions, SensorOptions
from snakemap.data.bands import check_layout, cleaned_names


def build_sensors(table: Mapping[str, Any] | None, bands: BandOptions) -> dict[str, SensorOptions]:
    """Build and check the ``sensors`` table against the ``bands`` section.

    Raises:
        ConfigError: naming the key (``sensors.<name>.bands``, ...): a band list that is not a
            non-empty list of unique names, a bad scale, offset or nodata, a sensor lacking a band
            that ``bands.select`` keeps or an index needs; and, when ``bands.select`` is null or
            picks bands by position, sensors whose band lists differ.
    """
    sensors = {str(name): _sensor(f"sensors.{name}", values) for name, values in (table or {}).items()}
    for name, sensor in sensors.items():
        _check_bands(name, sensor, bands)
    _check_same_bands(sensors, bands)
    return sensors


def _sensor(key: str, values: Any) -> SensorOptions:
    """One entry of the table, every value checked; errors name ``key`` and the field."""
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{key}: expected a table with {', '.join(SensorOptions.model_fields)}, got {values!r}"
        )
    try:
        return SensorOptions.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(message(exc, tuple(key.split(".", 1)))) from None


def _check_bands(name: str, sensor: SensorOptions, bands: BandOptions) -> None:
    """Every band that ``bands.select`` keeps and every index needs is one of the sensor's."""
    check_layout(bands, f"sensors.{name}.bands", f"sensor {name}", sensor.bands)


def _check_same_bands(sensors: Mapping[str, SensorOptions], bands: BandOptions) -> None:
    """Without a selection by name, every sensor (and ``bands.names``) must list the same bands."""
    if bands.select is not None and all(isinstance(i, str) for i in bands.select):
        return  # selected by name: the same bands whatever the sensor
    layouts = {f"sensors.{n}.bands": s.bands for n, s in sensors.items()}
    if sensors and bands.names is not None:
        layouts["bands.names"] = bands.names
    if len({tuple(v) for v in layouts.values()}) > 1:
        how = "is null and keeps every band" if bands.select is None else "picks bands by position"
        raise ConfigError(
            f"bands.select {how}, but {', '.join(layouts)} list different bands: select the bands to keep "
            "by name, so that every scene cleans to the same bands"
        )


@dataclass
class SceneTables:
    """The per-scene tables of a config: what a manifest row's ``sensor`` and ``label_scheme`` name."""

    #: sensor name -> how its files are stored
    sensors: dict[str, SensorOptions] = field(default_factory=dict)
    #: the ``labels`` section; None where the config has none
    labels: LabelOptions | None = None
    #: label scheme name -> the classes of ``labels`` with the scheme's remap table
    label_schemes: dict[str, LabelOptions] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> SceneTables:
        """Build and check the ``sensors`` and ``label_schemes`` tables of a config dict.

        Raises:
            ConfigError: naming the key, see :func:`build_sensors`; ``label_schemes.<name>`` for
                a scheme that maps a value to a class not in ``labels.classes``.
        """
        labels: LabelOptions | None = build("labels", cfg["labels"]) if cfg.get("labels") else None
        schemes = cfg.get("label_schemes") or {}
        built: dict[str, LabelOptions] = {}
        for name, remap in schemes.items():
            if labels is None:
                raise ConfigError("label_schemes: needs the labels section (its classes)")
            if not isinstance(remap, Mapping):
                raise ConfigError(f"label_schemes.{name}: expected a table value -> class, got {remap!r}")
            try:
                built[str(name)] = labels.with_scheme(str(name), remap)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return cls(build_sensors(cfg.get("sensors"), build("bands", cfg.get("bands"))), labels, built)

    def cleaned_bands(
        self, bands: BandOptions, qa_band: str | int | None, sensors: Iterable[str]
    ) -> list[str] | None:
        """The cleaned band names of scenes whose manifest rows name ``sensors`` (``""``: none).

        See :func:`snakemap.data.bands.cleaned_names`: None where the files' own band descriptions
        decide them.

        Raises:
            ConfigError: naming the key, for a band or QA band that a sensor or ``bands.names`` lacks.
        """
        layouts: dict[str, list[str] | None] = {}
        for name in sorted(set(sensors)):
            sensor = self.sensor(name)
            layouts["bands.names" if sensor is None else f"sensors.{name}.bands"] = (
                bands.names if sensor is None else sensor.bands
            )
        return cleaned_names(bands, layouts, qa_band)

    def sensor(self, name: str) -> SensorOptions | None:
        """The sensor a manifest row names; None for a row without one (``""``)."""
        return _entry(self.sensors, name, "sensors") if name else None

    def scene_labels(self, scheme: str) -> LabelOptions | None:
        """The labels of a manifest row: its label scheme's, or ``labels`` for a row without one."""
        return _entry(self.label_schemes, scheme, "label_schemes") if scheme else self.labels


def _entry(table: Mapping[str, Any], name: str, key: str) -> Any:
    if name not in table:
        raise ConfigError(f"{key}: no entry {name!r} (known: {', '.join(table) or 'none'})")
    return table[name]
