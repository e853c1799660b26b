"""The typed sections of what is made from the applied maps beyond the maps themselves: area
estimates from a reference sample (``areas``) (see :mod:`snakemap.core.sections`: each class is
the only place of its keys, defaults and constraints)."""

from __future__ import annotations

from pydantic import Field

from snakemap.core.section_base import Positive, Section


class AreaSampleOptions(Section):
    """How ``snakemap sample`` sizes the stratified reference sample (Olofsson et al. 2014,
    eq. 13): the total from a target standard error of overall accuracy, shared in proportion to
    the mapped areas, at least ``min_per_class`` points per mapped class."""

    target_se: float = Field(0.01, gt=0, lt=1, description="target standard error of overall accuracy")
    #: the user's accuracy expected per class (one value for all, or per class name)
    users_accuracy: float | dict[str, float] = Field(
        0.9, description="expected user's accuracy: one value for every class, or per class name"
    )
    min_per_class: int = Field(50, ge=2, description="points per mapped class at least")
    seed: int = 0

    def expected(self, classes: list[str]) -> list[float]:
        """The expected user's accuracy of each class, in class order (0.9 where not given)."""
        given = self.users_accuracy
        if isinstance(given, dict):
            unknown = sorted(set(given) - set(classes))
            if unknown:
                raise ValueError(f"users_accuracy: {unknown} are not classes ({', '.join(classes)})")
            return [float(given.get(c, 0.9)) for c in classes]
        return [float(given)] * len(classes)


class AreaOptions(Section):
    """The ``areas`` section: error-adjusted areas per class with 95% confidence intervals of each
    applied predictor's maps, from a labelled reference sample
    (:mod:`snakemap.evaluation.areas`)."""

    OMIT_UNSET = frozenset({"aoi", "resolution", "reference_raster"})

    #: a vector file of the area of interest (any CRS); None: everything the maps cover
    aoi: str | None = Field(None, description="a vector file of the area of interest; unset: the maps' union")
    #: per applied predictor, its labelled sample (drawn by `snakemap sample` from that predictor's
    #: map, the ``reference`` column filled in); a predictor without one gets only its sample
    reference: dict[str, str] = Field(
        default_factory=dict,
        description="apply predictor -> its labelled sample (snakemap sample's file, reference filled in)",
    )
    #: an equal-area CRS: every pixel of the grid the maps are counted on has the same area
    crs: str = Field("EPSG:6933", description="the equal-area CRS the maps are counted in")
    #: pixel size of that grid in metres; None: the finest of the maps'
    resolution: Positive | None = Field(None, description="metres; unset: the finest of the maps' pixels")
    sample: AreaSampleOptions = Field(default_factory=AreaSampleOptions)
    #: reference class rasters (values through ``labels.remap``; the first with a value at a
    #: point gives it) that label the drawn sample in the workflow, for a predictor without
    #: ``reference``: a benchmark's or example's stand-in for people labelling the points
    reference_raster: str | list[str] | None = Field(
        None,
        description="reference class raster(s) (values through labels.remap, the first with a value at a "
        "point gives it) that label the drawn sample of predictors without a reference file (examples, "
        "benchmarks)",
    )

    def reference_rasters(self) -> list[str]:
        """``reference_raster`` as a list (empty where unset)."""
        given = self.reference_raster
        return [] if given is None else [given] if isinstance(given, str) else list(given)


class VectorizeOptions(Section):
    """The ``vectorize`` section: each applied scene's class map as polygons
    (:mod:`snakemap.outputs.polygons`)."""

    OMIT_UNSET = frozenset({"classes"})

    #: the classes that become polygons; None: every class
    classes: list[str] | None = Field(None, description="classes made into polygons; unset: every class")
    #: the minimum mapping unit: smaller patches merge into their largest neighbour first
    min_area_m2: float = Field(
        0, ge=0, description="minimum mapping unit, m²: smaller patches are sieved away"
    )
    #: tolerance of the simplification, metres (0: the pixels' outlines)
    simplify_m: float = Field(0, ge=0, description="simplification tolerance, metres (0: pixel outlines)")
