"""Application settings and shards: fixed slices of the apply scenes in manifest order, one job each.

Kept free of heavy imports: the workflow and ``snakemap progress`` read it often."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from snakemap.core.apply_sections import MaskOptions
from snakemap.core.config import ConfigError
from snakemap.core.io import atomic_path
from snakemap.plan.manifest_cache import CACHE_ENTRY

if TYPE_CHECKING:
    import pandas as pd

#: shard ids: shard-00000, shard-00001, ...
SHARD_PATTERN = r"shard-[0-9]{5}"


def shard_ids(n_scenes: int, size: int) -> list[str]:
    """The ids of the shards of ``n_scenes`` scenes in manifest order."""
    return [f"shard-{k:05d}" for k in range((n_scenes + size - 1) // size)]


def shard_members(scene_ids: Sequence[str], shard: str, size: int) -> list[str]:
    """The scenes of one shard: a fixed slice of the apply scenes in manifest order."""
    return list(scene_ids[shard_slice(shard, size)])


def shard_slice(shard: str, size: int) -> slice:
    """The positions of a shard's scenes among the apply scenes."""
    k = int(shard.split("-")[1])
    return slice(k * size, (k + 1) * size)


class ShardTable:
    """The apply scenes of a checked manifest, cut into shards once for the whole plan.

    The workflow asks each shard for its fingerprint, sensors and files; with a million scenes a
    lookup of 2,000 rows in the manifest per question (pandas ``.loc``) costs seconds in all,
    a slice of these columns costs nothing.
    """

    def __init__(self, manifest: pd.DataFrame, size: int) -> None:
        """``manifest``: as :func:`snakemap.plan.manifest.read_manifest` returns it; ``size``: scenes
        per shard (``apply.shard_size``)."""
        apply = manifest["role"] == "apply"
        self.size = size
        # positions, not labels, slice the rows (iloc); a manifest of apply rows alone (a big
        # run's) is not copied
        self.rows = manifest if apply.all() else manifest[apply]
        self.scene_ids: list[str] = self.rows["scene_id"].tolist()
        self.ids = shard_ids(len(self.scene_ids), size)
        self._lines: tuple[np.ndarray, memoryview] | None = None
        self._fingerprints: dict[str, str] | None = None
        self._entry: str = manifest.attrs.get(CACHE_ENTRY, "")
        # URIs as the manifest writes them: where the run starts from changes no fingerprint
        self._prefix: str = manifest.attrs.get("uri_prefix", "")
        self._quoted = False
        self._sensorless = not (self.rows["sensor"] != "").any()

    def _slice(self, shard: str) -> slice:
        return shard_slice(shard, self.size)

    def members(self, shard: str) -> list[str]:
        """The scene ids of ``shard``, in manifest order."""
        return shard_members(self.scene_ids, shard, self.size)

    def column(self, shard: str, name: str) -> list[str]:
        """One manifest column (e.g. ``uri`` or ``sensor``) of the shard's rows."""
        return list(self.rows[name].iloc[self._slice(shard)].tolist())

    def fingerprints(self) -> dict[str, str]:
        """:meth:`fingerprint` of every shard. For a manifest read through the cache (see
        :func:`snakemap.plan.manifest.read_manifest`) they are kept beside it, by shard size: the
        next plan of the same manifest reads 16 digits per shard instead of hashing every row."""
        if self._fingerprints is not None:
            return self._fingerprints
        entry = self._entry
        kept = Path(f"{entry.removesuffix('.parquet')}.shards-{self.size}.json") if entry else None
        if kept is not None:
            with contextlib.suppress(OSError, ValueError):
                found = json.loads(kept.read_text())
                if isinstance(found, dict) and list(found) == self.ids:
                    self._fingerprints = found
                    return found
        self._fingerprints = {shard: self._hash(shard) for shard in self.ids}
        if kept is not None:
            with contextlib.suppress(OSError), atomic_path(kept) as tmp:
                tmp.write_text(json.dumps(self._fingerprints))
        return self._fingerprints

    def fingerprint(self, shard: str) -> str:
        """16 hex digits that change when the shard's scenes (ids, URIs, checksums) change.

        The sha256 of the rows as CSV with a ``scene_id,uri,sha256`` header: the same digits as
        pandas' ``to_csv`` of those columns gave, so finished shards of earlier runs stay done.
        """
        return self.fingerprints().get(shard) or self._hash(shard)

    def _hash(self, shard: str) -> str:
        offsets, data = self._csv_lines()
        if self._quoted:
            uris = [
                u.removeprefix(f"{self._prefix}/") if self._prefix else u for u in self.column(shard, "uri")
            ]
            rows = zip(self.column(shard, "scene_id"), uris, self.column(shard, "sha256"), strict=True)
            text = io.StringIO()
            writer = csv.writer(text, lineterminator="\n")
            writer.writerow(["scene_id", "uri", "sha256"])
            writer.writerows(rows)
            return hashlib.sha256(text.getvalue().encode()).hexdigest()[:16]
        cut = self._slice(shard)
        n = len(offsets) - 1  # a shard past the end has no rows: the header's hash
        start, stop = int(offsets[min(cut.start, n)]), int(offsets[min(cut.stop, n)])
        digest = hashlib.sha256(b"scene_id,uri,sha256\n")
        digest.update(data[start:stop])
        return digest.hexdigest()[:16]

    def _csv_lines(self) -> tuple[np.ndarray, memoryview]:
        r"""Each apply row as ``scene_id,uri,sha256\n`` in one byte string, and where each row
        starts (``n + 1`` offsets): a shard's CSV is one slice of it (a million rows: 0.4 s,
        about half of what Arrow's string-join kernels took)."""
        if self._lines is None:
            ids, uris, sums = (self.rows[c].tolist() for c in ("scene_id", "uri", "sha256"))
            if self._prefix:
                uris = [u.removeprefix(f"{self._prefix}/") for u in uris]
            lines = [f"{i},{u},{h}\n" for i, u, h in zip(ids, uris, sums, strict=True)]
            text = "".join(lines)
            body = text.encode()
            n = len(lines)
            # byte lengths: the characters' where all is ASCII, else each line's encoding
            sizes = map(len, lines) if len(body) == len(text) else (len(line.encode()) for line in lines)
            offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(np.fromiter(sizes, dtype=np.int64, count=n), out=offsets[1:])
            # A field with a comma, quote or line break is quoted in CSV: then (rarely) the CSV
            # writer makes each shard's text.
            counts = {c: body.count(c) for c in (b",", b"\n", b'"', b"\r")}
            self._quoted = counts[b","] != 2 * n or counts[b"\n"] != n or counts[b'"'] + counts[b"\r"] > 0
            self._lines = (offsets, memoryview(body))
        return self._lines

    def sensors(self, shard: str) -> list[str]:
        """The sensors that the shard's rows name, sorted (no empty name)."""
        if self._sensorless:
            return []
        return sorted(set(self.rows["sensor"].iloc[self._slice(shard)].unique().tolist()) - {""})


def check_mask(mask: MaskOptions | dict[str, Any] | None, cleaned: list[str] | None) -> None:
    """``apply.mask.band`` must be one of the cleaned bands (see :func:`snakemap.data.bands.cleaned_names`).

    Args:
        cleaned: the cleaned band names; None when only the files know them (nothing is checked).

    Raises:
        ConfigError: naming ``apply.mask.band`` and the cleaned bands.
    """
    band = mask.band if isinstance(mask, MaskOptions) else (mask or {}).get("band")
    if band is not None and cleaned is not None and band not in cleaned:
        raise ConfigError(
            f"apply.mask.band {band!r} is not among the cleaned bands {cleaned} (bands.select, bands.indices)"
        )
