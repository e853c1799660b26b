"""Pages of ``snakemake --report`` that are tables: HTML files the report shows in the page (a
CSV would only download), and the landing text the report opens on.

- :func:`table_page`: one CSV table (the calval summary, the best predictor per class) as HTML,
  class names with their colour swatch.
- :func:`maps_page`: the applied maps: progress per predictor (ok, empty, corrupt, pending),
  hectares mapped per class, the area estimates with 95% intervals where a labelled sample
  exists, the corrupt scenes with their reasons and the scenes unlike the training data.
- :func:`landing`: the workflow description followed by the best predictor per class.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from snakemap.core.io import atomic_path, read_json

#: rows of a scene list shown at most (the rest are counted; progress.json has them all)
MAX_ROWS = 500

STYLE = """
body { font-family: system-ui, sans-serif; font-size: 14px; margin: 1em 1.5em; color: #222; }
h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
.swatch { display: inline-block; width: 0.9em; height: 0.9em; border: 1px solid #555;
          vertical-align: middle; margin-right: 0.4em; }
p.note { color: #555; max-width: 60em; }
"""


def _cell(value: Any, swatches: Mapping[str, str]) -> tuple[str, bool]:
    """A value as HTML, and whether it is text (left-aligned); a class name gets its swatch."""
    if isinstance(value, float):
        if pd.isna(value):
            return "", False
        return (f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:,.1f}"), False
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f"{value:,}", False
    text = html.escape(str(value))
    if str(value) in swatches:
        text = f'<span class="swatch" style="background:{swatches[str(value)]}"></span>{text}'
    return text, True


def html_table(frame: pd.DataFrame, swatches: Mapping[str, str] | None = None) -> str:
    """A data frame as an HTML table (values escaped; numbers right-aligned)."""
    swatches = swatches or {}
    head = "".join(f'<th class="text">{html.escape(str(c))}</th>' for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            text, is_text = _cell(value.item() if hasattr(value, "item") else value, swatches)
            cells.append(f'<td class="text">{text}</td>' if is_text else f"<td>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def page(title: str, body: str) -> str:
    """A standalone HTML page."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )


def write_page(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path, suffix=".html") as tmp:
        tmp.write_text(text, encoding="utf-8")


def table_page(
    csv: str | os.PathLike[str],
    out: str | os.PathLike[str],
    title: str,
    note: str = "",
    swatches: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Write the table in ``csv`` as an HTML page; the table."""
    frame = pd.read_csv(csv)
    body = (f'<p class="note">{html.escape(note)}</p>' if note else "") + html_table(frame, swatches)
    write_page(out, page(title, body))
    return frame


def _scene_list(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    frame = pd.DataFrame(rows[:MAX_ROWS], columns=list(columns))
    more = len(rows) - MAX_ROWS
    tail = f'<p class="note">and {more:,} more: see progress.json</p>' if more > 0 else ""
    return html_table(frame) + tail


def maps_tables(
    progress: Mapping[str, Mapping[str, Any]],
    areas: Mapping[str, pd.DataFrame],
    classes: Sequence[str] | None,
) -> dict[str, pd.DataFrame]:
    """The maps page's tables: ``progress`` (a row per predictor), ``mapped`` (hectares and share
    per class, a column pair per predictor), and ``areas/{predictor}`` (the estimates)."""
    tables: dict[str, pd.DataFrame] = {}
    tables["progress"] = pd.DataFrame(
        [
            {
                "predictor": name,
                "scenes": p["total"],
                "ok": p["ok"],
                "empty": p["empty"],
                "corrupt": p["corrupt"],
                "pending": p["pending"],
                "done %": round(float(p["done_pct"]), 1),
                "shards done": f"{p['shards_done']}/{p['shards']}",
                "unlike training": len(p.get("unlike_scenes") or []),
                "by fallback": p.get("fallback_scenes", 0),
            }
            for name, p in progress.items()
        ]
    )
    if classes is not None:
        mapped: dict[str, Any] = {"class": list(classes)}
        for name, p in progress.items():
            ha = [float((p.get("mapped_ha") or {}).get(c, 0.0)) for c in classes]
            total = sum(ha)
            mapped[f"{name} ha"] = [round(v, 1) for v in ha]
            mapped[f"{name} %"] = [round(100 * v / total, 2) if total else float("nan") for v in ha]
        tables["mapped"] = pd.DataFrame(mapped)
    for name, frame in areas.items():
        keep = [
            c
            for c in (
                "class", "mapped_ha", "sample_points", "area_ha", "area_low_ha", "area_high_ha",
                "users_accuracy", "users_ci95", "producers_accuracy", "producers_ci95",
                "overall_accuracy", "overall_ci95",
            )
            if c in frame.columns
        ]  # fmt: skip
        tables[f"areas/{name}"] = frame[keep]
    return tables


def maps_page(
    progress_files: Mapping[str, str | os.PathLike[str]],
    area_files: Mapping[str, str | os.PathLike[str]],
    classes: Sequence[str] | None,
    colors: Sequence[str] | None,
    out: str | os.PathLike[str],
) -> dict[str, pd.DataFrame]:
    """Write the applied maps' page (see the module docstring); its tables."""
    progress = {name: read_json(path) for name, path in progress_files.items()}
    areas = {name: pd.read_csv(path) for name, path in area_files.items()}
    tables = maps_tables(progress, areas, classes)
    swatches = dict(zip(classes or [], colors or [], strict=False))
    parts = [
        "<h2>Progress</h2>",
        '<p class="note">Scenes by state in each predictor\'s progress.json when the report was '
        "made; empty scenes hold nothing to map, corrupt ones are listed below with why.</p>",
        html_table(tables["progress"]),
    ]
    if "mapped" in tables:
        parts += [
            "<h2>Mapped area per class</h2>",
            '<p class="note">Hectares of each class in the ok scenes\' maps, counted on the ground '
            "(a geographic map's rows weighed by latitude); where scenes overlap each counts its own. "
            "Map areas are biased by the map's errors: the estimates below correct them.</p>",
            html_table(tables["mapped"], swatches),
        ]
    for name in areas:
        parts += [
            f"<h2>Area estimates: {html.escape(name)}</h2>",
            '<p class="note">Error-adjusted areas with 95% confidence intervals from the labelled '
            "reference sample (Olofsson et al. 2014): area_low_ha to area_high_ha; user's and "
            "producer's accuracy with their 95% half-widths.</p>",
            html_table(tables[f"areas/{name}"], swatches),
        ]
    for name, p in progress.items():
        corrupt = p.get("corrupt_scenes") or []
        parts.append(f"<h2>Corrupt scenes: {html.escape(name)} ({len(corrupt):,})</h2>")
        parts.append(_scene_list(corrupt, ["scene_id", "reason"]) if corrupt else '<p class="note">none</p>')
        unlike = p.get("unlike_scenes") or []
        threshold = p.get("shift_threshold", 1.0)
        parts.append(
            f"<h2>Scenes unlike the training data: {html.escape(name)} "
            f"({len(unlike):,}, shift &gt; {threshold:g})</h2>"
        )
        parts.append(
            _scene_list(unlike, ["scene_id", "shift", "fallback"])
            if unlike
            else "<p class=\"note\">none: every ok scene's bands lie near the training scenes'</p>"
        )
    write_page(out, page("Applied maps", "".join(parts)))
    return tables


def landing(
    description: str | os.PathLike[str],
    winners_csv: str | os.PathLike[str] | None,
    out: str | os.PathLike[str],
    swatches: Mapping[str, str] | None = None,
) -> None:
    """Write the report's landing text (reStructuredText): ``description`` (the workflow's
    ``report/workflow.rst``), then the best predictor per class as a table in the page.

    Snakemake renders the text with Jinja first: the table is raw HTML inside ``{% raw %}``.
    """
    text = Path(description).read_text(encoding="utf-8").rstrip() + "\n"
    if winners_csv is not None and Path(winners_csv).is_file():
        table = html_table(pd.read_csv(winners_csv), swatches)
        style = (
            "<style>.prose.max-w-lg{max-width:64rem}"  # the table beside the rule graph
            ".prose table{font-size:12px;border-collapse:collapse}"
            ".prose td,.prose th{border:1px solid #ddd;padding:2px 6px}"
            ".prose .swatch{display:inline-block;width:.9em;height:.9em;border:1px solid #555;"
            "margin-right:.3em}"
            "</style>"
        )
        raw = "\n".join("   " + line for line in (style + table).splitlines())
        text += (
            "\nBest predictor per class\n------------------------\n\n"
            "IoU at the calval sites of the best model or ensemble per class, beside the best "
            "baseline (``margin_points``: by how many IoU points it wins). Figures, maps and "
            "tables are under the categories on the left.\n\n"
            "{% raw %}\n.. raw:: html\n\n" + raw + "\n\n{% endraw %}\n"
        )
    with atomic_path(out, suffix=".rst") as tmp:
        tmp.write_text(text, encoding="utf-8")
