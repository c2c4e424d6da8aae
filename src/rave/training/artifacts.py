"""Files a training run writes: atomic checkpoints, the metrics CSV, plots and sample grids.

Every file is written to a temporary name in its target folder and then moved into place
with ``os.replace``, so an interrupted run never leaves a half-written checkpoint or image.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

# rave's one verified atomic write (checked writes, fsync, umask); the name is kept for
# the training code that imports it from here.
from rave.io.atomic import atomic_write as atomic_write_bytes

__all__ = [
    "MetricsCSV",
    "atomic_write_bytes",
    "atomic_write_text",
    "save_checkpoint",
    "save_loss_plot",
    "save_sample_grid",
]

log = logging.getLogger(__name__)


def atomic_write_text(path: Path, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """``torch.save`` a dict of plain containers and tensors, atomically.

    The payload must load with ``torch.load(weights_only=True)``; nothing else is checked
    here, the training tests load every checkpoint that way.
    """
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


class MetricsCSV:
    """Append-only CSV of logged metrics, one row per logged iteration.

    Columns are the keys of the rows, in order of first appearance. On resume, rows at or
    after the resumed iteration are removed so that the file matches an uninterrupted run.

    Args:
        path: the CSV file.
        resume_from: on resume, the first iteration that will be logged again; None starts
            a new file.
    """

    def __init__(self, path: Path, resume_from: int | None = None) -> None:
        self.path = path
        self.columns: list[str] | None = None
        rows: list[dict[str, str]] = []
        if resume_from is not None and path.is_file():
            with path.open(newline="", encoding="utf-8") as handle:
                reader = csv.DictReader(handle)
                self.columns = list(reader.fieldnames or []) or None
                rows = [r for r in reader if int(r["iteration"]) < resume_from]
        if self.columns is not None:
            self._rewrite(rows)
        elif path.exists():
            path.unlink()

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        assert self.columns is not None
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())

    def write(self, row: dict[str, float | int | str]) -> None:
        """Append one row (the first row also writes the header).

        A row with keys not seen before (the guided stage logs other terms than the
        reconstruction stage) rewrites the file once with the wider header.
        """
        if self.columns is None:
            self.columns = list(row)
            self._rewrite([])
        new_keys = [k for k in row if k not in self.columns]
        if new_keys:
            rows = self.read()
            self.columns = [*self.columns, *new_keys]
            self._rewrite(rows)
        with self.path.open("a", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns)
            writer.writerow({k: _fmt(row.get(k, "")) for k in self.columns})

    def read(self) -> list[dict[str, str]]:
        """All rows written so far."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))


def _fmt(value: Any) -> Any:
    return f"{value:.8g}" if isinstance(value, float) else value


def save_loss_plot(rows: Sequence[dict[str, str]], path: Path, stage_boundary: int | None) -> None:
    """A PNG of every logged loss term against the iteration (log scale where positive).

    Args:
        rows: rows of :class:`MetricsCSV` (``iteration`` plus numeric columns).
        path: the PNG to write.
        stage_boundary: the first guided iteration, drawn as a vertical line (None: none).
    """
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    skip = {"iteration", "stage", "round", "lr", "time"}
    keys = [k for k in rows[0] if k not in skip]
    for row in rows:  # columns added by a later stage
        keys.extend(k for k in row if k not in skip and k not in keys)
    # Constrained layout and minor log ticks cost seconds per figure: a fixed layout instead.
    fig = Figure(figsize=(3.2 * max(1, len(keys)), 2.8))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.16, top=0.88, wspace=0.35)
    axes = fig.subplots(1, max(1, len(keys)), squeeze=False)[0]
    its = np.array([int(r["iteration"]) for r in rows])
    for ax, key in zip(axes, keys, strict=False):
        values = np.array([_float(r.get(key)) for r in rows])
        ax.plot(its, values, lw=1)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        finite = values[np.isfinite(values)]
        if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
            ax.set_yscale("log")
            ax.minorticks_off()
        if stage_boundary is not None and its.min() <= stage_boundary <= its.max():
            ax.axvline(stage_boundary, color="grey", ls="--", lw=0.8)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    atomic_write_bytes(path, buffer.getvalue())


def _float(value: str | None) -> float:
    return float(value) if value not in ("", None) else float("nan")


def save_sample_grid(inputs: Tensor, outputs: Tensor, path: Path) -> None:
    """A PNG grid: the inputs in the top row, their enhancements below.

    Args:
        inputs: ``(N, 3, H, W)`` in [0, 1].
        outputs: ``(N, 3, H, W)`` in [0, 1].
        path: the PNG to write.
    """
    from PIL import Image

    rows = [torch.cat(list(t.detach().float().cpu().clamp(0, 1)), dim=2) for t in (inputs, outputs)]
    grid = torch.cat(rows, dim=1)  # (3, 2H, N*W)
    array = (grid.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
