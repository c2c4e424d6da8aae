"""Score folders of images: paired (matched by file stem) and no-reference, several methods.

:func:`evaluate_folders` returns an :class:`EvaluationResult` holding one record per
(method, image) and the problems met on the way. A file that cannot be scored is reported in
one line and the rest of the batch carries on.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rave.evaluation.imread import ImageReadError, LoadedImage, read_image
from rave.io.formats import IMAGE_SUFFIXES, scan_image_folder
from rave.io.printable import printable

__all__ = [
    "METRICS",
    "EvaluationError",
    "EvaluationResult",
    "MetricInfo",
    "check_packages",
    "evaluate_folders",
    "failure_line",
    "list_images",
    "match_reference",
    "match_stems",
]

PROTOCOLS = ("reference", "standard", "both")
MATCHES = ("stem", "reference")


@dataclass(frozen=True)
class MetricInfo:
    """How to show a metric: label, which direction is better (None: neither), and which
    protocol it follows."""

    label: str
    higher_is_better: bool | None  # None: no better direction (brightness)
    group: str  # "reference", "standard", "no-reference" or "exposure"


# Column name -> description, in display order.
METRICS: dict[str, MetricInfo] = {
    "psnr_ref": MetricInfo("PSNR ref (dB)", True, "reference"),
    "ssim_ref": MetricInfo("SSIM ref", True, "reference"),
    "lpips_ref": MetricInfo("LPIPS ref", False, "reference"),
    "psnr": MetricInfo("PSNR RGB (dB)", True, "standard"),
    "psnr_y": MetricInfo("PSNR Y (dB)", True, "standard"),
    "ssim": MetricInfo("SSIM RGB", True, "standard"),
    "ssim_y": MetricInfo("SSIM Y", True, "standard"),
    "lpips": MetricInfo("LPIPS", False, "standard"),
    "niqe": MetricInfo("NIQE", False, "no-reference"),
    "brisque": MetricInfo("BRISQUE", False, "no-reference"),
    # Brighter is not better: an over-exposed result is brighter than a good one.
    "mean_luma": MetricInfo("mean luma", None, "exposure"),
    "p10_luma": MetricInfo("p10 luma", None, "exposure"),
    "clipped": MetricInfo("clipped", False, "exposure"),
    "shadow_mean_lift": MetricInfo("shadow lift (mean)", True, "exposure"),
    "shadow_p10_lift": MetricInfo("shadow lift (p10)", True, "exposure"),
    "chroma_shift": MetricInfo("chroma shift", False, "exposure"),
}


class EvaluationError(Exception):
    """A problem that stops the whole evaluation (empty folder, unmatched files...)."""


@dataclass
class EvaluationResult:
    """Scores of one or several methods.

    Attributes:
        records: one dict per (method, image): ``method``, ``image`` (file stem), ``path``,
            ``reference`` / ``input`` paths when known, and one float per computed metric.
        metrics: metric column names present in ``records``, in display order.
        errors: one line per file that could not be scored.
        notes: one line per caveat (metric unavailable, resizing, grey files...).
    """

    records: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def methods(self) -> list[str]:
        """Method names in the order they were given."""
        return list(dict.fromkeys(record["method"] for record in self.records))

    def summary(self) -> dict[str, dict[str, float]]:
        """Per method: ``n_images`` and the mean of each metric over its non-NaN values."""
        table: dict[str, dict[str, float]] = {}
        for method in self.methods():
            rows = [r for r in self.records if r["method"] == method]
            entry: dict[str, float] = {"n_images": float(len(rows))}
            for name in self.metrics:
                # NaN (undefined) is left out; inf (identical images' PSNR) is kept.
                values = [r[name] for r in rows if name in r and not math.isnan(r[name])]
                entry[name] = float(np.mean(values)) if values else math.nan
            table[method] = entry
        return table


def list_images(folder: str | Path, notes: list[str] | None = None) -> dict[str, Path]:
    """Image files of a folder (not recursive, hidden files skipped), keyed by file stem.

    Args:
        folder: the folder to list.
        notes: where to say what was not listed (sub-folders, which are not read; files
            with an image name that are not regular files), when given.

    Raises:
        EvaluationError: not a folder, no image in it, or two images share a stem.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: not a folder")
    images: dict[str, Path] = {}
    scan = scan_image_folder(folder)
    for path in scan.files:  # hidden temporaries of atomic writes skipped
        if path.stem in images:
            raise EvaluationError(
                f"{folder}: two images share the stem {path.stem!r} "
                f"({images[path.stem].name}, {path.name}); keep one"
            )
        images[path.stem] = path
    if not images:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        if scan.left_out:  # a dataset kept in sub-folders: only the folder itself is read
            raise EvaluationError(
                f"{folder}: no images directly inside, {len(scan.left_out)} sub-folder(s) not "
                "read: give the folder that holds the images"
            )
        raise EvaluationError(f"{folder}: no images found (looked for {suffixes})")
    if notes is not None and scan.left_out:
        # A dataset split into sub-folders would otherwise be scored in part without a word.
        names = ", ".join(printable(p.name) for p in scan.left_out[:5])
        more = f" and {len(scan.left_out) - 5} more" if len(scan.left_out) > 5 else ""
        notes.append(
            f"{printable(folder)}: {len(scan.left_out)} sub-folder(s) not read ({names}{more}); "
            "only the images directly inside are scored"
        )
    if notes is not None and scan.not_regular:
        notes.append(
            f"{printable(folder)}: {len(scan.not_regular)} image name(s) that are not regular "
            f"files skipped: {', '.join(printable(p.name) for p in scan.not_regular[:5])}"
        )
    return images


def match_stems(
    pred: Mapping[str, Path], reference: Mapping[str, Path], *, skip_unmatched: bool = False
) -> tuple[list[str], list[str]]:
    """Stems present in both folders, plus one note per unmatched file when skipping.

    Raises:
        EvaluationError: some files have no partner and ``skip_unmatched`` is false; the
            message lists them.
    """
    common = [stem for stem in pred if stem in reference]
    unmatched = [str(pred[s]) for s in pred if s not in reference] + [
        str(reference[s]) for s in reference if s not in pred
    ]
    # Stems are compared exactly (as file names are on Linux): say when case alone differs.
    lone_references = {s.casefold(): s for s in reference if s not in pred}
    by_case = [
        f"{stem} / {lone_references[stem.casefold()]}"
        for stem in pred
        if stem not in reference and stem.casefold() in lone_references
    ]
    hint = f"; stems that differ only in case: {', '.join(by_case[:5])}" if by_case else ""
    hint += " ..." if len(by_case) > 5 else ""
    if not common:
        raise EvaluationError(
            "no prediction matches a reference image by file stem; unmatched: "
            + ", ".join(unmatched[:20])
            + (" ..." if len(unmatched) > 20 else "")
            + hint
        )
    if unmatched and not skip_unmatched:
        listed = ", ".join(unmatched[:20]) + (
            f" (and {len(unmatched) - 20} more)" if len(unmatched) > 20 else ""
        )
        raise EvaluationError(
            f"{len(unmatched)} file(s) have no partner with the same stem: {listed} "
            f"(use --skip-unmatched to score the matched pairs only){hint}"
        )
    return common, [f"{path}: no partner with the same stem, skipped" for path in unmatched]


def match_reference(
    pred: Mapping[str, Path], reference: Mapping[str, Path]
) -> tuple[list[str], dict[str, Path], list[str]]:
    """Pair files as the authors' ``compute_metrics.py`` does (BAID's published numbers).

    Their rule, restated: a prediction's name up to its first dot is its base; a base with a
    parenthesis is kept only if it holds ``(1)`` (BAID's duplicate inputs ``0152(1)``;
    ``(2)``... are skipped), and then loses its last three characters. The first reference
    file (here: in name order; theirs: directory order) whose *name* contains the base as a
    substring is its partner, so ``152`` also pairs with ``1152.png``. Predictions without a
    partner and unused references are dropped silently by their code; here each gets a note.
    Every pair that is not an exact stem match gets a warning note naming both files.

    Returns:
        the prediction stems to score, prediction stem -> its reference file, and the notes.
    """
    names = sorted(reference.values(), key=lambda p: p.name)
    stems: list[str] = []
    partners: dict[str, Path] = {}
    notes: list[str] = []
    for stem, path in pred.items():
        base = path.name.split(".")[0]
        if "(" in base:
            if "(1)" not in base:
                notes.append(f"{path}: skipped (the reference code keeps only duplicates (1))")
                continue
            base = base[:-3]
        partner = next((ref for ref in names if base in ref.name), None)
        if partner is None:
            notes.append(f"{path}: no reference file name contains {base!r}, skipped")
            continue
        if partner.stem != stem:
            kind = "duplicate (1)" if partner.stem == base else "substring match"
            notes.append(
                f"warning: {path.name} scored against {partner.name} "
                f"({kind}, the reference code's file matching)"
            )
        stems.append(stem)
        partners[stem] = partner
    unused = [p for p in names if p not in set(partners.values())]
    if unused:
        notes.append(
            f"{len(unused)} reference file(s) matched no prediction: "
            + ", ".join(p.name for p in unused[:20])
            + (" ..." if len(unused) > 20 else "")
        )
    if not stems:
        raise EvaluationError("no prediction matches a reference file by the reference code's rule")
    return stems, partners, notes


def _resize_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    import cv2

    shrinking = height * width < image.shape[0] * image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    resized = cv2.resize(image, (width, height), interpolation=interpolation)
    return np.clip(resized, 0.0, 1.0)


@contextlib.contextmanager
def _quiet(logger: logging.Logger) -> Iterator[None]:
    """Drop ``logger``'s records below ERROR while the block runs."""

    def keep(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


@dataclass
class _Scorers:
    """Which metrics to compute, with the loaded models they need."""

    protocol: str = "both"
    lpips_model: Any | None = None
    no_reference: bool = True

    def paired(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """Paired scores of ``pred`` against ``target``, ``(H, W, 3)`` float in [0, 1] of one
        size, by column name (NaN where undefined)."""
        from rave.evaluation import paired

        with _quiet(paired.logger):  # an undefined score is a note naming the file instead
            return self._paired(pred, target)

    def _paired(self, pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
        from rave.evaluation import paired, perceptual

        scores: dict[str, float] = {}
        if self.protocol in ("reference", "both"):
            scores["psnr_ref"] = paired.psnr_reference(pred, target)
            scores["ssim_ref"] = paired.ssim_reference(pred, target)
            if self.lpips_model is not None:
                scores["lpips_ref"] = perceptual.lpips_reference(
                    pred, target, model=self.lpips_model
                )
        if self.protocol in ("standard", "both"):
            scores["psnr"] = paired.psnr(pred, target)
            scores["psnr_y"] = paired.psnr_y(pred, target)
            scores["ssim"] = paired.ssim(pred, target)
            scores["ssim_y"] = paired.ssim_y(pred, target)
            if self.lpips_model is not None:
                scores["lpips"] = perceptual.lpips(pred, target, model=self.lpips_model)
        return scores

    def unpaired(self, image: np.ndarray, source: Path, notes: list[str]) -> dict[str, float]:
        from rave.evaluation.brisque import brisque
        from rave.evaluation.exposure import exposure_stats
        from rave.evaluation.niqe import niqe

        scores: dict[str, float] = {}
        if self.no_reference:
            try:
                scores["niqe"] = niqe(image)
            except ValueError as error:
                notes.append(f"{source}: NIQE skipped ({error})")
            try:
                scores["brisque"] = brisque(image)
            except ValueError as error:
                notes.append(f"{source}: BRISQUE skipped ({error})")
        stats = exposure_stats(image)
        scores.update(mean_luma=stats.mean_luma, p10_luma=stats.p10_luma, clipped=stats.clipped)
        return scores


# What the metrics import, all in the eval extra (pyproject.toml): rave-enhance[eval].
EVAL_EXTRA = "pip install 'rave-enhance[eval]'"
_PAIRED_MODULES = ("skimage.metrics",)  # SSIM
_NO_REFERENCE_MODULES = ("scipy.ndimage", "scipy.special")  # NIQE, BRISQUE


def check_packages(*, paired: bool, no_reference: bool) -> None:
    """Import what the chosen metrics need, so that a missing package stops the evaluation
    before any work instead of failing every image in turn.

    Raises:
        ModuleNotFoundError: a package of the eval extra is missing (``rave`` names the
            extra that installs it).
    """
    modules = (_PAIRED_MODULES if paired else ()) + (_NO_REFERENCE_MODULES if no_reference else ())
    for module in modules:
        importlib.import_module(module)


def _lpips_unavailable() -> str | None:
    """Why LPIPS cannot be imported (a note naming the extra), or None."""
    try:
        importlib.import_module("lpips")
    except ModuleNotFoundError as error:  # lpips itself, or a package it imports
        missing = (error.name or "lpips").split(".")[0]
        return f"LPIPS not available: the '{missing}' package is not installed: {EVAL_EXTRA}"
    return None


def failure_line(path: Path, error: Exception) -> str:
    """One line naming the file for whatever failed on it; a bug in rave is re-raised."""
    from rave.errors import describe_failure, is_rave_bug

    if is_rave_bug(error):
        raise error
    if isinstance(error, ImageReadError):
        return printable(error)
    return f"{printable(path)}: {describe_failure(error)}"


def _read(path: Path, cache: dict[Path, LoadedImage]) -> LoadedImage:
    if path not in cache:
        cache.clear()  # keep at most one decoded reference/input around
        cache[path] = read_image(path)
    return cache[path]


def evaluate_folders(
    methods: Mapping[str, str | Path | Mapping[str, Path]],
    *,
    reference: str | Path | None = None,
    inputs: str | Path | None = None,
    protocol: str = "both",
    use_lpips: bool = True,
    lpips_model: Any | None = None,
    lpips_device: Any = "cpu",
    no_reference: bool = True,
    resize: bool = False,
    skip_unmatched: bool = False,
    progress: Callable[[str], None] | None = None,
    match: str = "stem",
    progress_bar: bool = False,
) -> EvaluationResult:
    """Score each method's folder of enhanced images.

    Args:
        methods: method name -> folder of its enhanced images, or -> its files by stem
            (exactly those are scored: ``rave evaluate --model`` passes the files this run
            wrote, so that a file left in the folder by an earlier run is not scored).
        reference: folder of ground-truth images, matched by file stem (paired metrics).
        inputs: folder of the original inputs, matched by stem (shadow lift); its images are
            also scored as a method named ``"input"`` with the no-reference metrics and,
            where ``reference`` has their partner (by the ``match`` rule), the paired ones.
        protocol: ``"reference"``, ``"standard"`` or ``"both"`` (paired metrics only).
        use_lpips: compute LPIPS when its weights are available (else a note says why not).
        lpips_model: an ``lpips.LPIPS`` module to use instead of loading one.
        lpips_device: where the loaded LPIPS network runs (``torch.device`` or its name).
        no_reference: compute NIQE and BRISQUE; exposure statistics are always computed.
        resize: resize a prediction to its reference's size when they differ (else that pair
            is an error).
        skip_unmatched: score the matched files only instead of failing on unmatched ones.
        progress: called with each file path before it is scored.
        match: ``"stem"`` (exact file stems) or ``"reference"``: the authors' pairing,
            see :func:`match_reference` (unmatched files are then notes, not errors).
        progress_bar: show a tqdm bar (stderr) over the images to score, with the count and
            the time left; scoring a 2 MP photo takes seconds (NIQE, BRISQUE, SSIM).

    Raises:
        EvaluationError: an empty folder, unmatched files (unless skipped), bad protocol.
        ModuleNotFoundError: a package of the eval extra that the metrics need is missing.
    """
    if protocol not in PROTOCOLS:
        raise EvaluationError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
    if match not in MATCHES:
        raise EvaluationError(f"unknown file matching {match!r}; choose from {', '.join(MATCHES)}")
    check_packages(paired=reference is not None, no_reference=no_reference)
    result = EvaluationResult()
    scorers = _Scorers(protocol=protocol, no_reference=no_reference)
    if reference is not None and use_lpips:
        from rave.evaluation.perceptual import MetricUnavailableError, load_lpips

        unavailable = None if lpips_model is not None else _lpips_unavailable()
        if unavailable is not None:
            result.notes.append(unavailable)
        else:
            try:
                scorers.lpips_model = (
                    lpips_model if lpips_model is not None else load_lpips(device=lpips_device)
                )
            except MetricUnavailableError as error:  # the AlexNet weights are not cached
                result.notes.append(str(error))
    folders = {
        name: dict(files) if isinstance(files, Mapping) else list_images(files, result.notes)
        for name, files in methods.items()
    }
    references = list_images(reference, result.notes) if reference is not None else None
    input_images = list_images(inputs, result.notes) if inputs is not None else None
    cache: dict[Path, LoadedImage] = {}

    # Pair every folder first: a matching error stops the run before any scoring, and the
    # number of images to score is known for the progress bar.
    plans: list[tuple[str, dict[str, Path], list[str], Mapping[str, Path] | None]] = []
    for name, images in folders.items():
        stems = list(images)
        partners = references  # prediction stem -> reference file
        if references is not None and match == "reference":
            stems, partners, notes = match_reference(images, references)
            result.notes.extend(notes)
        elif references is not None:
            stems, notes = match_stems(images, references, skip_unmatched=skip_unmatched)
            result.notes.extend(notes)
        plans.append((name, images, stems, partners))

    # The inputs against the references: the "input" row of a paper's table (the score of
    # doing nothing), paired by the rule the predictions follow; unmatched inputs are scored
    # without reference, silently (the inputs folder may hold more than the test set).
    input_partners: Mapping[str, Path] = {}
    if references is not None and input_images is not None:
        if match == "reference":
            with contextlib.suppress(EvaluationError):
                _, input_partners, _ = match_reference(input_images, references)
        else:
            input_partners = {s: references[s] for s in input_images if s in references}

    from tqdm.auto import tqdm

    total = len(input_images or {}) + sum(len(stems) for _, _, stems, _ in plans)
    bar = tqdm(total=total, desc="scoring", unit="img", disable=not progress_bar)
    try:
        for stem, path in (input_images or {}).items():
            if progress is not None:
                progress(str(path))
            record: dict[str, Any] = {"method": "input", "image": stem, "path": str(path)}
            try:
                image = read_image(path)
                record.update(scorers.unpaired(image.pixels, path, result.notes))
                partner = input_partners.get(stem)
                if partner is not None:
                    _score_input_against(record, image, partner, scorers, result)
            except Exception as error:
                result.errors.append(failure_line(path, error))
                continue
            finally:
                bar.update()
            result.records.append(record)

        for name, images, stems, partners in plans:
            for stem in stems:
                path = images[stem]
                if progress is not None:
                    progress(str(path))
                scored = _score_one(
                    name, stem, path, partners, input_images, scorers, resize, cache, result
                )
                bar.update()
                if scored is not None:
                    result.records.append(scored)
    finally:
        bar.close()

    images_of: dict[str, set[str]] = {name: set() for name in methods}
    for record in result.records:
        images_of.setdefault(record["method"], set()).add(record["image"])
    images_of.pop("input", None)
    if len(images_of) > 1 and len({frozenset(images) for images in images_of.values()}) > 1:
        # Skipped pairs or failed files: each mean is then over its own images.
        everywhere = set.intersection(*images_of.values())
        counts = ", ".join(f"{name} {len(images)}" for name, images in images_of.items())
        result.notes.append(
            f"the methods were scored on different images ({counts}; {len(everywhere)} in "
            "all of them): their means are not over the same set"
        )
    present = {key for record in result.records for key in record}
    result.metrics = [name for name in METRICS if name in present]
    return result


# Why a paired score can be NaN (see rave.evaluation.paired).
_UNDEFINED = {
    "ssim_ref": "the enhanced image is flat: the reference code's data range max - min is 0",
}


def _paired_scores(
    scorers: _Scorers, pixels: np.ndarray, target: np.ndarray, path: Path, result: EvaluationResult
) -> dict[str, float]:
    """The paired scores of ``pixels`` against ``target`` (both ``(H, W, 3)`` float in
    [0, 1], one size), each undefined one said in a note naming ``path``."""
    scores = scorers.paired(pixels, target)
    for name in (n for n, v in scores.items() if math.isnan(v)):
        # Left out of the method's mean (EvaluationResult.summary): said, not hidden.
        why = _UNDEFINED.get(name, "undefined for this pair")
        label = METRICS[name].label
        result.notes.append(f"{printable(path)}: {label} undefined ({why}); not in mean")
    return scores


def _score_input_against(
    record: dict[str, Any],
    image: LoadedImage,
    partner: Path,
    scorers: _Scorers,
    result: EvaluationResult,
) -> None:
    """Add the paired scores of an input against its reference to its ``record``.

    An unreadable reference is listed once among the errors (the predictions paired with it
    fail on it too); a reference of another size leaves the input without paired scores.
    """
    path = Path(record["path"])
    try:
        target = read_image(partner)
    except ImageReadError as error:
        line = failure_line(partner, error)
        if line not in result.errors:
            result.errors.append(line)
        return
    if target.pixels.shape != image.pixels.shape:
        result.notes.append(
            f"{printable(path)}: size differs from its reference {printable(partner.name)}, "
            "no paired scores for the input"
        )
        return
    record["reference"] = str(partner)
    record.update(_paired_scores(scorers, image.pixels, target.pixels, path, result))


def _depth_name(image: LoadedImage) -> str:
    """``"16-bit"``, or ``"32-bit float"`` for a float TIFF."""
    return "32-bit float" if image.bit_depth == 32 else f"{image.bit_depth}-bit"


def _score_one(
    method: str,
    stem: str,
    path: Path,
    references: Mapping[str, Path] | None,
    inputs: Mapping[str, Path] | None,
    scorers: _Scorers,
    resize: bool,
    cache: dict[Path, LoadedImage],
    result: EvaluationResult,
) -> dict[str, Any] | None:
    from rave.evaluation.exposure import chroma_shift, shadow_lift

    record: dict[str, Any] = {"method": method, "image": stem, "path": str(path)}
    try:
        pred = read_image(path)
        if pred.alpha:
            result.notes.append(f"{printable(path)}: alpha channel ignored (colours scored)")
        if references is not None:
            target = read_image(references[stem])
            record["reference"] = str(references[stem])
            pixels = pred.pixels  # the prediction as the paired metrics see it
            if pixels.shape != target.pixels.shape:
                if not resize:
                    h, w = pixels.shape[:2]
                    th, tw = target.pixels.shape[:2]
                    raise ValueError(
                        f"size {w}x{h} differs from reference {references[stem].name} "
                        f"({tw}x{th}); use --resize to resize predictions"
                    )
                pixels = _resize_to(pixels, *target.pixels.shape[:2])
                result.notes.append(
                    f"{printable(path)}: resized to its reference's size for the paired "
                    "metrics (the no-reference ones score the file as it is)"
                )
            if pred.channels != target.channels:
                result.notes.append(
                    f"{printable(path)}: grey and colour files compared "
                    "(grey replicated to 3 channels)"
                )
            deep = [
                f"{printable(f)} ({_depth_name(i)})"
                for f, i in ((path, pred), (references[stem], target))
                if i.bit_depth > 8
            ]
            if deep and scorers.protocol != "standard":
                result.notes.append(
                    f"{', '.join(deep)}: rounded to 8 bits for the reference protocol "
                    "(defined on 8-bit files; the authors' OpenCV reader truncates a 16-bit PNG "
                    "instead, v >> 8, up to one level lower)"
                )
            record.update(_paired_scores(scorers, pixels, target.pixels, path, result))
        # No-reference metrics, exposure and shadow lift describe the file itself: a
        # prediction resized for --resize would score differently at its reference's size.
        record.update(scorers.unpaired(pred.pixels, path, result.notes))
        if inputs is not None and stem in inputs:
            record["input"] = str(inputs[stem])
            try:
                source = _read(inputs[stem], cache)
            except ImageReadError as error:
                # The input's own line says why (it is scored as the method "input"); the
                # prediction keeps its scores, without the ones that need its input.
                line = failure_line(inputs[stem], error)
                if line not in result.errors:
                    result.errors.append(line)
                return record
            if source.pixels.shape == pred.pixels.shape:
                lift = shadow_lift(source.pixels, pred.pixels)
                record["shadow_mean_lift"] = lift.mean_lift
                record["shadow_p10_lift"] = lift.p10_lift
                record["chroma_shift"] = chroma_shift(source.pixels, pred.pixels)
            else:
                result.notes.append(
                    f"{printable(path)}: size differs from its input, no shadow lift"
                )
    except Exception as error:
        # Listed once, by whoever reports the result (rave evaluate: after the table).
        result.errors.append(failure_line(path, error))
        return None
    return record
