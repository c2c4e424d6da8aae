"""Write an :class:`~rave.evaluation.runner.EvaluationResult` as a table, CSV, JSON and HTML.

Files written into the output folder (each through :func:`rave.io.atomic.atomic_write`,
verified, then renamed into place):
``metrics.csv`` (one row per method, mean scores), ``per_image.csv`` (one row per method and
image), ``summary.json`` (means, protocol definitions, notes, errors), ``report.html`` (the
summary table and a side-by-side grid of thumbnails with per-image scores, worst images
first; self-contained, thumbnails embedded) and ``grid.jpg`` (the first rows of that grid as
one picture).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from rave.evaluation.runner import METRICS, EvaluationResult
from rave.io.atomic import atomic_write
from rave.io.printable import printable

__all__ = ["ReportWriteError", "format_table", "write_report"]


class ReportWriteError(Exception):
    """A report file that could not be written (disk full, permissions); ``str()`` is one
    line naming the file, not rave's temporary one."""

    def __init__(self, path: Path, error: OSError) -> None:
        from rave.errors import os_reason
        from rave.io.printable import printable

        super().__init__(f"cannot write {printable(path)} ({os_reason(error)})")
        self.path = path


def _write(path: Path, data: bytes) -> None:
    """:func:`atomic_write`, its OSError as a :class:`ReportWriteError` naming ``path``."""
    try:
        atomic_write(path, data)
    except OSError as error:
        raise ReportWriteError(path, error) from error


PROTOCOL_NOTES = {
    "reference": (
        "RAVE/CLIP-LIT evaluation code: 8-bit images, grey via cv2 RGB2GRAY applied to BGR "
        "data (channels swapped), cv2.PSNR (range 255), skimage SSIM (7x7 uniform window, "
        "data_range = enhanced max - min), LPIPS-Alex at short side 1024 with ImageNet "
        "mean/std input"
    ),
    "standard": (
        "PSNR on RGB (range 1) and BT.601 Y (range 255); SSIM with Gaussian window sigma 1.5 "
        "on RGB and Y; LPIPS-Alex v0.1 with [-1, 1] input at native size"
    ),
    "no-reference": "NIQE and BRISQUE as the LIVE MATLAB releases (published models, 8-bit grey)",
    "exposure": (
        "BT.709 luma of gamma-encoded RGB; clipped = share of pixels with max channel >= "
        "0.99; shadow lift = luma change over the input's darkest half (luma <= median)"
    ),
}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)


def format_table(result: EvaluationResult) -> str:
    """The per-method mean scores as a plain-text table (one row per method)."""
    summary = result.summary()
    header = ["method", "n", *(METRICS[m].label for m in result.metrics)]
    rows = [
        [printable(method), str(int(values["n_images"]))]
        + [_fmt(values[m]) for m in result.metrics]
        for method, values in summary.items()
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _cell(value: Any) -> Any:
    """A CSV cell: NaN empty; text (file names come from outside rave) escaped, so that an
    undecodable byte, which UTF-8 cannot encode, becomes ``\\xNN`` and a line break cannot
    split a row."""
    if isinstance(value, float) and math.isnan(value):
        return ""
    return printable(value) if isinstance(value, str) else value


def _csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue().encode()


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return printable(value)  # an undecodable byte in a file name: \xNN, valid JSON text
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {printable(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def write_report(
    result: EvaluationResult,
    out_dir: str | Path,
    *,
    protocol: str = "both",
    max_report_images: int = 100,
    thumbnail_size: int = 256,
) -> dict[str, Path]:
    """Write the CSV, JSON, HTML and JPEG files; returns their paths by kind.

    Raises:
        ReportWriteError: a file could not be written (those before it were).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    paths = {
        "metrics": out / "metrics.csv",
        "per_image": out / "per_image.csv",
        "summary": out / "summary.json",
        "report": out / "report.html",
        "grid": out / "grid.jpg",
    }
    _write(
        paths["metrics"],
        _csv_bytes(
            ["method", "n_images", *result.metrics],
            [[m, int(v["n_images"]), *(v[k] for k in result.metrics)] for m, v in summary.items()],
        ),
    )
    extra = ["path", "reference", "input"]
    _write(
        paths["per_image"],
        _csv_bytes(
            ["method", "image", *result.metrics, *extra],
            [
                [r["method"], r["image"], *(r.get(k, math.nan) for k in result.metrics)]
                + [r.get(k, "") for k in extra]
                for r in result.records
            ],
        ),
    )
    from rave import __version__

    document = {
        "rave_version": __version__,  # which definitions (and fixes) made these numbers
        "protocol": protocol,
        "definitions": PROTOCOL_NOTES,
        "metrics": {
            m: {
                "label": METRICS[m].label,
                "higher_is_better": METRICS[m].higher_is_better,
                "group": METRICS[m].group,
            }
            for m in result.metrics
        },
        # a count, not a mean: an integer in JSON as in metrics.csv
        "summary": {
            method: {k: int(v) if k == "n_images" else v for k, v in values.items()}
            for method, values in summary.items()
        },
        "notes": result.notes,
        "errors": result.errors,
    }
    _write(paths["summary"], json.dumps(_json_safe(document), indent=2).encode())
    rows = _grid_rows(result)[:max_report_images]
    thumbs = _Thumbnails(thumbnail_size)
    _write(paths["report"], _html(result, summary, rows, thumbs, protocol).encode())
    _write(paths["grid"], _grid_jpeg(result, rows[:12], thumbs))
    return paths


def _primary_metric(result: EvaluationResult) -> str | None:
    for name in ("psnr_ref", "psnr", "niqe", "brisque", "clipped"):
        if name in result.metrics:
            return name
    return None


def _grid_rows(result: EvaluationResult) -> list[tuple[str, dict[str, dict[str, Any]]]]:
    """One row per image stem: method -> record, worst images (by the first method) first."""
    by_stem: dict[str, dict[str, dict[str, Any]]] = {}
    for record in result.records:
        by_stem.setdefault(record["image"], {})[record["method"]] = record
    primary = _primary_metric(result)
    methods = [m for m in result.methods() if m != "input"] or result.methods()
    if primary is None or not methods:
        return sorted(by_stem.items())

    def badness(item: tuple[str, dict[str, dict[str, Any]]]) -> float:
        value = item[1].get(methods[0], {}).get(primary)
        if value is None or math.isnan(value):
            return -math.inf  # unscored images go last
        return -value if METRICS[primary].higher_is_better else value

    return sorted(by_stem.items(), key=badness, reverse=True)


class _Thumbnails:
    """JPEG thumbnails of image files, decoded once."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._cache: dict[str, Any] = {}

    def image(self, path: str) -> Any:
        from PIL import Image

        if path not in self._cache:
            from rave.evaluation.imread import ImageReadError, read_image

            try:
                pixels = read_image(path).pixels
                picture = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
            except ImageReadError:
                picture = Image.new("RGB", (self.size, self.size), (128, 0, 0))
            picture.thumbnail((self.size, self.size))
            self._cache[path] = picture
        return self._cache[path]

    def data_uri(self, path: str) -> str:
        buffer = io.BytesIO()
        self.image(path).save(buffer, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


# Scores shown under each thumbnail (all of them are in per_image.csv).
_CAPTION_METRICS = (
    "psnr_ref", "ssim_ref", "lpips_ref", "psnr", "ssim", "lpips",
    "niqe", "brisque", "mean_luma", "clipped", "shadow_mean_lift",
)  # fmt: skip


def _score_line(record: dict[str, Any], metrics: list[str]) -> str:
    shown = [m for m in _CAPTION_METRICS if m in metrics and m in record]
    return " | ".join(f"{METRICS[m].label}: {_fmt(record[m])}" for m in shown)


def _slots(
    result: EvaluationResult, rows: list[tuple[str, dict[str, dict[str, Any]]]]
) -> list[str]:
    """The grid's columns, the same in every row: ``input`` and ``reference`` where any row
    has one, then each method in the order given. Fixed, so that a column is one method all
    the way down even where a row lacks an image (unmatched, failed)."""
    records = [record for _, row in rows for record in row.values()]
    slots = ["input"] if any(r["method"] == "input" or r.get("input") for r in records) else []
    slots += ["reference"] if any(r.get("reference") for r in records) else []
    return slots + [method for method in result.methods() if method != "input"]


def _columns(
    result: EvaluationResult, row: dict[str, dict[str, Any]], slots: list[str]
) -> list[tuple[str, str | None, str]]:
    """(title, image path or None where the row has none, score text) for each slot."""
    cells: list[tuple[str, str | None, str]] = []
    for slot in slots:
        if slot in row:  # a method's record, or the input's own (scored as a method)
            cells.append((slot, row[slot]["path"], _score_line(row[slot], result.metrics)))
        elif slot in ("input", "reference"):
            paths = [r[slot] for r in row.values() if r.get(slot)]
            cells.append((slot, paths[0] if paths else None, ""))
        else:
            cells.append((slot, None, ""))
    return cells


def _html(
    result: EvaluationResult,
    summary: dict[str, dict[str, float]],
    rows: list[tuple[str, dict[str, dict[str, Any]]]],
    thumbs: _Thumbnails,
    protocol: str,
) -> str:
    def esc(text: str) -> str:
        return html.escape(printable(text))

    best: dict[str, float] = {}
    for name in result.metrics:
        values = [v[name] for m, v in summary.items() if m != "input" and not math.isnan(v[name])]
        direction = METRICS[name].higher_is_better
        if values and direction is not None:  # brightness has no best
            best[name] = max(values) if direction else min(values)
    arrows = {True: " &uarr;", False: " &darr;", None: ""}
    head = "".join(
        f"<th>{esc(METRICS[m].label)}{arrows[METRICS[m].higher_is_better]}</th>"
        for m in result.metrics
    )
    body = ""
    for method, values in summary.items():
        cells = "".join(
            f"<td><b>{_fmt(values[m])}</b></td>"
            if best.get(m) == values[m] and method != "input"
            else f"<td>{_fmt(values[m])}</td>"
            for m in result.metrics
        )
        body += f"<tr><td>{esc(method)}</td><td>{int(values['n_images'])}</td>{cells}</tr>"
    grid = ""
    slots = _slots(result, rows)
    for stem, row in rows:
        figures = "".join(
            f"<figure><img src='{thumbs.data_uri(path)}' alt='{esc(title)}'>"
            f"<figcaption><b>{esc(title)}</b><br>{esc(scores)}</figcaption></figure>"
            if path is not None
            else f"<figure class='missing'><figcaption><b>{esc(title)}</b><br>no image"
            "</figcaption></figure>"
            for title, path, scores in _columns(result, row, slots)
        )
        grid += f"<h3>{esc(stem)}</h3><div class='row'>{figures}</div>"
    lists = ""
    for title, items in (("Notes", result.notes), ("Errors", result.errors)):
        if items:
            lists += (
                f"<h2>{title}</h2><ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"
            )
    definitions = "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>" for k, v in PROTOCOL_NOTES.items())
    primary = _primary_metric(result)
    order = f"worst {METRICS[primary].label} of the first method first" if primary else "by name"
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>rave evaluate</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; }}
.row {{ display: flex; gap: 8px; flex-wrap: wrap; }}
figure {{ margin: 0; width: {thumbs.size}px; }} figure img {{ max-width: 100%; }}
figcaption {{ font-size: 11px; }} figure.missing {{ color: #888; }}
</style></head><body>
<h1>rave evaluate</h1>
<p>Protocol: {esc(protocol)}. Means over images; the best method per column in bold.</p>
<table><tr><th>method</th><th>n</th>{head}</tr>{body}</table>
<h2>Definitions</h2><ul>{definitions}</ul>
{lists}
<h2>Images ({esc(order)})</h2>
{grid}
</body></html>
"""


def _grid_jpeg(
    result: EvaluationResult,
    rows: list[tuple[str, dict[str, dict[str, Any]]]],
    thumbs: _Thumbnails,
) -> bytes:
    from PIL import Image, ImageDraw

    slots = _slots(result, rows)
    layout = [_columns(result, row, slots) for _, row in rows]
    columns = max(len(slots), 1)
    cell, caption = thumbs.size, 28
    heights = [
        max((thumbs.image(p).height for _, p, _ in cells if p is not None), default=cell) + caption
        for cells in layout
    ]
    canvas = Image.new("RGB", (columns * cell, max(1, sum(heights))), "white")
    draw = ImageDraw.Draw(canvas)
    top = 0
    for (stem, _), cells, height in zip(rows, layout, heights, strict=True):
        for c, (title, path, scores) in enumerate(cells):
            if path is None:  # the column stays this method's: left blank, said so
                label = printable(f"{stem}: {title} (no image)")
                draw.text((c * cell + 4, top + height - caption + 2), label, fill="grey")
                continue
            picture = thumbs.image(path)
            canvas.paste(picture, (c * cell + (cell - picture.width) // 2, top))
            first = scores.split(" | ")[0] if scores else ""
            label = printable(f"{stem}: {title}")
            draw.text((c * cell + 4, top + height - caption + 2), label, fill="black")
            draw.text((c * cell + 4, top + height - caption + 14), first, fill="black")
        top += height
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
