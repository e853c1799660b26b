"""The typed sections of the config that describe scenes: how they are fetched, which bands they
have and keep, how they are cleaned, labelled, chipped and split, and the demo's scenes.

Each class is one section (or one entry of a table section) and the only place where its keys,
defaults and constraints are written: the workflow's config and ``snakemap <step> --config``
are loaded through them (:mod:`snakemap.core.config`), and ``workflow/schemas/config.schema.json``
is generated from them. The ``labels`` section is in :mod:`snakemap.core.label_sections`; the model
sections (models, predict, calval, apply, downscaling) are in :mod:`snakemap.core.model_sections`.
"""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from snakemap.core.section_base import AnyNumber, Fraction, Name, NonNegative, Number, Positive, Section

#: named normalized differences ``(a - b) / (a + b)`` over source band names
PRESET_INDICES: dict[str, tuple[str, str]] = {
    "ndvi": ("nir", "red"),
    "ndwi": ("green", "nir"),  # McFeeters (1996): open water > 0
    "mndwi": ("green", "swir16"),
    "nbr": ("nir", "swir22"),
}


class AcquireOptions(Section):
    """How files are fetched; the ``acquire`` section."""

    #: further attempts after the first one fails for a transient reason
    retries: int = Field(3, ge=0, description="further attempts after a transient failure")
    #: seconds before the first retry; doubled before each further one
    backoff_s: NonNegative = Field(1.0, description="seconds before the first retry, doubled each time")
    #: network timeout per attempt, in seconds
    timeout_s: Positive = Field(60.0, description="network timeout per attempt")
    #: the S3 (or GCS) endpoint, e.g. ``http://127.0.0.1:9000`` for MinIO; None: the provider's
    endpoint_url: str | None = Field(
        None,
        pattern="^https?://",
        description="the S3 (or GCS) endpoint for s3:// (gs://) URIs, e.g. http://127.0.0.1:9000 for "
        "MinIO; null uses the provider's. Credentials come from the environment (AWS_ACCESS_KEY_ID, "
        "AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS), never from the config",
    )
    #: the bucket's region (``s3://``); None: the environment's (``AWS_REGION``) or the default
    region: str | None = Field(
        None, description="the bucket's region (s3://); null: AWS_REGION or the default"
    )
    #: unsigned requests (public buckets); credentials, if any, are not used
    anonymous: bool = Field(False, description="unsigned requests for public buckets (no credentials used)")
    #: the reader pays for the transfer (requester-pays buckets)
    requester_pays: bool = Field(
        False,
        description="the reader pays for the transfer (requester-pays buckets; gs://: the project in "
        "GS_USER_PROJECT)",
    )
    #: apply reads a remote tiled GeoTIFF without a sha256 where it lies (only the bands it
    #: needs, strip by strip) instead of downloading it; untiled files are downloaded
    read_in_place: bool = Field(
        True,
        description="apply reads a remote band-interleaved GeoTIFF that has no sha256 where it lies, "
        "through GDAL's /vsis3/, /vsigs/ or /vsicurl/: only the bands it needs, strip by strip. Other "
        "files, scenes with a sha256 and reprojected or buffered applies are downloaded first",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and urllib.parse.urlparse(value).scheme not in ("http", "https"):
            raise ValueError(f"{value!r} is no http:// or https:// URL")
        return value


class IndexSpec(Section):
    """A normalized difference ``(a - b) / (a + b)`` of two source bands, added as a channel."""

    name: Name
    #: band name of the minuend
    a: str
    #: band name of the subtrahend
    b: str


class BandOptions(Section):
    """Which bands to keep and which indices to add; the ``bands`` section."""

    #: names of the source bands in file order; when given, also the expected band count
    names: list[str] | None = Field(
        None, description="names of the source bands in file order; also the expected band count"
    )
    #: bands to keep, in order, by name or 1-based index; None keeps all
    select: list[str | int] | None = Field(
        None, description="bands to keep, in order, by name or 1-based index (null keeps all)"
    )
    #: indices to append: preset names (``ndvi``, ``ndwi``, ``mndwi``, ``nbr``) or ``{name, a, b}``
    indices: list[Literal["ndvi", "ndwi", "mndwi", "nbr"] | IndexSpec] = Field(
        default_factory=list, description="normalized differences appended as channels"
    )

    def index_specs(self) -> list[IndexSpec]:
        """The indices as :class:`IndexSpec`, presets expanded."""
        return [
            IndexSpec(name=item, a=PRESET_INDICES[item][0], b=PRESET_INDICES[item][1])
            if isinstance(item, str)
            else item
            for item in self.indices
        ]


class StacMaskOptions(Section):
    """A STAC Item's mask asset (a scene-classification or QA layer) and the values or bits that
    mark a pixel invalid, in ``clean.qa``'s vocabulary; an entry's ``mask``."""

    OMIT_UNSET = frozenset({"values", "bits"})

    #: the asset's key in the items (``SCL``, ``qa_pixel``)
    asset: str
    values: list[int] = Field(default_factory=list, description="mask values that mark a pixel invalid")
    bits: list[Annotated[int, Field(ge=0, le=63)]] = Field(
        default_factory=list, description="bits that mark a pixel invalid when set"
    )


class SensorOptions(Section):
    """How one sensor's files are stored; an entry of the ``sensors`` table."""

    OMIT_UNSET = frozenset({"assets", "mask"})

    #: names of the source bands in file order; also the expected band count
    bands: list[str] = Field(
        description="names of the source bands in file order; also the expected band count"
    )
    #: reflectance = stored value * scale + offset (every source band but a QA band); None: a
    #: STAC Item's ``raster:bands`` scale (per band), else 1
    scale: Number | None = Field(
        None, description="reflectance = stored value * scale + offset (null: a STAC item's, else 1)"
    )
    offset: Number | None = Field(None, description="null: a STAC item's raster:bands offset, else 0")
    #: the stored value of nodata pixels; None: ``clean.nodata``, else the file's own (a STAC
    #: Item's ``raster:bands`` nodata)
    nodata: Number | None = Field(
        None, description="stored nodata value (null: clean.nodata, else the file's)"
    )
    #: STAC Item scenes: band name (of ``bands``) -> the items' asset key; unset: the band's name
    assets: dict[str, str] | None = Field(
        None, description="STAC items: band name -> asset key (unset: the band names are the keys)"
    )
    #: STAC Item scenes: the mask asset and what it flags invalid
    mask: StacMaskOptions | None = Field(None, description="STAC items: a mask asset (SCL, qa_pixel)")
    #: per source band (scale, offset) from a STAC Item, where ``scale``/``offset`` are unset
    _item_scaling: list[tuple[float, float]] | None = PrivateAttr(None)

    def with_item_scaling(self, scaling: list[tuple[float, float]]) -> SensorOptions:
        """This sensor for one STAC Item scene: its assets' ``raster:bands`` (scale, offset), one
        per band of :attr:`bands`, where the entry does not set its own."""
        scene = self.model_copy()
        scene._item_scaling = list(scaling)
        return scene

    def scaling(self, band: int) -> tuple[float, float]:
        """(scale, offset) of source band ``band``: the entry's, else the item's, else (1, 0)."""
        item = (
            self._item_scaling[band] if self._item_scaling and band < len(self._item_scaling) else (1.0, 0.0)
        )
        scale = self.scale if self.scale is not None else item[0]
        offset = self.offset if self.offset is not None else (item[1] if self.scale is None else 0.0)
        return float(scale), float(offset)

    @field_validator("bands", mode="before")
    @classmethod
    def _bands(cls, names: Any) -> Any:
        if not isinstance(names, list) or not names or not all(isinstance(b, str) and b for b in names):
            raise ValueError(f"expected a non-empty list of band names (file order), got {names!r}")
        twice = sorted({b for b in names if names.count(b) > 1})
        if twice:
            raise ValueError(f"band name(s) {', '.join(twice)} given more than once")
        return names

    @field_validator("scale")
    @classmethod
    def _scale(cls, scale: float | None) -> float | None:
        if scale == 0:
            raise ValueError("must not be 0 (reflectance = value * scale + offset)")
        return scale

    @model_validator(mode="after")
    def _assets_of_bands(self) -> SensorOptions:
        unknown = sorted(set(self.assets or {}) - set(self.bands))
        if unknown:
            raise ValueError(f"assets: {unknown} are not among bands ({', '.join(self.bands)})")
        return self

    def asset_key(self, band: str) -> str:
        """The STAC asset key of source band ``band``."""
        return (self.assets or {}).get(band, band)

    @property
    def is_reflectance(self) -> bool:
        """True when the stored values are reflectance already (scale 1, offset 0 for every band)."""
        return all(self.scaling(i) == (1.0, 0.0) for i in range(len(self.bands)))


class QAOptions(Section):
    """A quality band whose flagged pixels are masked (``clean.qa``)."""

    OMIT_UNSET = frozenset({"values", "bits"})

    #: the QA band, by name or 1-based index; it is never part of the cleaned image
    band: str | int
    #: QA values that mark a pixel invalid
    values: list[int] = Field(default_factory=list, description="QA values that mark a pixel invalid")
    #: bit positions (0 = least significant) any of which, when set, mark a pixel invalid
    bits: list[Annotated[int, Field(ge=0, le=63)]] = Field(
        default_factory=list, description="bits that mark a pixel invalid when set"
    )


class CleanOptions(Section):
    """How scenes are cleaned; the ``clean`` section."""

    #: nodata value of the source bands; None uses the file's own
    nodata: AnyNumber | None = Field(
        None, description="nodata value of the source bands (null uses the file's)"
    )
    #: a pixel whose source bands are all 0 is nodata (common in L1/L2 tiles without nodata)
    zero_is_nodata: bool = Field(False, description="a pixel whose bands are all 0 is nodata")
    #: a QA band to mask with
    qa: QAOptions | None = Field(
        None, description="a quality band; flagged pixels are masked and the band is dropped"
    )
    #: reproject to this CRS (e.g. ``EPSG:32755``); None keeps the scene's
    crs: str | None = Field(None, description="reproject to this CRS")
    #: reproject to this pixel size in CRS units; None keeps the scene's
    resolution: Positive | None = Field(None, description="reproject to this pixel size")
    #: resampling of the image when reprojecting (labels always use nearest)
    resampling: Literal["nearest", "bilinear", "cubic", "average"] = "bilinear"
    #: a scene with a smaller fraction of valid pixels is empty
    min_valid_fraction: Fraction = Field(0.01, description="below this a scene is empty")

    @field_validator("crs")
    @classmethod
    def _crs(cls, crs: str | None) -> str | None:
        if crs is not None:
            from rasterio.crs import CRS

            CRS.from_user_input(crs)  # a CRSError (a ValueError) names the bad value
        return crs

    @property
    def qa_options(self) -> QAOptions | None:
        """The QA band's options, if any."""
        return self.qa

    @property
    def qa_band(self) -> str | int | None:
        """The QA band's name or 1-based index, if any."""
        return None if self.qa is None else self.qa.band


class ChipOptions(Section):
    """How chips are cut; the ``chips`` section."""

    #: chip side in pixels
    size: int = Field(64, ge=8)
    #: step between chips in pixels; None = size (no overlap)
    stride: int | None = Field(None, ge=1, description="null = size (no overlap)")
    #: a chip with a larger fraction of invalid pixels is dropped
    max_nodata_fraction: Fraction = 0.2
    #: keep at most this many chips per scene (a seeded sample); None keeps all
    max_per_scene: int | None = Field(None, ge=1)
    #: fraction of the chips without any target pixel that is kept (1 keeps all)
    background_fraction: Fraction = Field(1.0, description="share of target-free chips kept")
    #: seed of the sampling
    seed: int = 0


class SplitOptions(Section):
    """How folds are made; the ``splits`` section."""

    #: number of folds, k
    folds: int = Field(3, ge=2)
    #: ``group``: GroupKFold; ``stratified_group``: StratifiedGroupKFold on chips with target
    method: Literal["group", "stratified_group"] = "stratified_group"
    #: seed of the shuffling
    seed: int = 0
    #: group by blocks of this many pixels within each AOI instead of by AOI; None = by AOI
    block_size: int | None = Field(
        None,
        ge=1,
        description="group chips by square blocks of this many pixels within each AOI (null = by AOI)",
    )


class DemoOptions(Section):
    """Size and place of demo scenes; the ``demo`` section (the embedded demo only)."""

    #: rows and columns of a scene
    size: int = Field(256, ge=32, description="rows and columns of a scene")
    #: pixel size in metres
    resolution: Positive = Field(10.0, description="pixel size in metres")
    #: CRS of the scenes (UTM 55S: the Great Barrier Reef)
    crs: str = Field("EPSG:32755", description="CRS of the demo scenes")
    #: names of demo scenes written as all nodata, to show the empty state
    empty: list[str] = Field(
        default_factory=list, description="demo scenes written as all nodata, to show the empty state"
    )


class CatalogSceneOptions(Section):
    """One scene of an example STAC catalogue: its source GeoTIFF (named bands, reflectance), its
    label raster, and the asset key of each band (default: the band's name)."""

    OMIT_UNSET = frozenset({"assets", "mask_asset"})

    image: str
    label: str
    assets: dict[str, str] | None = Field(None, description="band name -> asset key")
    #: the key of its mask asset (1 where a band is nodata); default ``QA``
    mask_asset: str | None = None
    #: the item's datetime (RFC 3339)
    datetime: str = "2020-01-01T00:00:00Z"


class CatalogOptions(Section):
    """The ``catalog`` section (examples only): a rule writes each scene under
    ``resources/catalog/{scene}/`` as a STAC Item of per-band COG assets (``coarse_bands`` at
    twice the pixel size), stored as ``(reflectance - offset) / scale`` in uint16 with that scale
    and offset in ``raster:bands``, a mask asset, and its label raster as polygons
    (``labels.gpkg``, field ``code``): data as a STAC API and a QGIS user would hand it over."""

    scenes: dict[str, CatalogSceneOptions] = Field(min_length=1)
    coarse_bands: list[str] = Field(default_factory=list, description="bands stored at twice the pixel size")
    scale: Positive = 0.0001
    offset: Number = -0.1


class ResourceOptions(Section):
    """What the lighter per-scene jobs ask of the executor; the ``resources`` section."""

    clean_mem_mb: int = Field(2000, ge=100)
    chips_mem_mb: int = Field(2000, ge=100)
    analyze_mem_mb: int = Field(2000, ge=100)
