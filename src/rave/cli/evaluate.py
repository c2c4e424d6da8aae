"""``rave evaluate``: score enhanced images, alone or against ground truth, and compare methods.

Examples::

    rave evaluate --pred out/rave --gt BAID/test/gt -o report/
    rave evaluate --pred out/rave --pred out/clip_lit --name RAVE --name CLIP-LIT --gt gt/
    rave evaluate --pred out/rave --input photos/           # no reference: NIQE, exposure
    rave evaluate --input photos/ --model rave-unpaired --model clip-lit -o cmp/
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from rave.cli._options import (
    UsageProblem,
    check_output_folder,
    device_option,
    output_option,
    overwrite_option,
    quiet_option,
    resolve_device,
    tile_option,
)

if TYPE_CHECKING:
    import torch

    from rave.session import Enhancer

__all__ = ["evaluate_command"]

_DIR = click.Path(exists=True, file_okay=False, dir_okay=True, path_type=Path)


def _method_names(preds: tuple[Path, ...], names: tuple[str, ...]) -> list[str]:
    if names and len(names) != len(preds):
        raise click.UsageError(f"--name given {len(names)} times for {len(preds)} --pred folders")
    if names:
        chosen = list(names)
    else:
        chosen = [p.resolve().name or str(p) for p in preds]
        if len(set(chosen)) < len(chosen):  # same folder names in different places
            chosen = [str(p) for p in preds]
    if len(set(chosen)) < len(chosen) or "input" in chosen:
        raise click.UsageError("method names must be unique and not 'input'; use --name")
    return chosen


def _write_png(path: Path, rgb_float) -> None:
    """Write an ``(H, W, 3)`` float image in [0, 1] as 8-bit PNG (verified, atomic).

    Rounded half up, as the authors' ``save_image`` writes their outputs, so that images
    scored under the reference protocol are the files their code would have written (NumPy's
    half-to-even rounding differs by one level on about 0.006% of pixels).
    """
    import numpy as np

    from rave.io import write_photo

    pixels = np.floor(np.clip(rgb_float, 0, 1) * 255 + 0.5).astype(np.uint8)
    write_photo(path, pixels, format="png")


# What an evaluation writes into its output folder (refused without --overwrite).
_OUTPUT_NAMES = (
    "metrics.csv",
    "per_image.csv",
    "summary.json",
    "report.html",
    "grid.jpg",
    "enhanced",
)


def _load_models(
    models: tuple[str, ...], tile: int | str | None, device: torch.device
) -> dict[str, Enhancer]:
    """Every ``--model``, loaded before any image is enhanced, by the label it is shown as.

    Raises:
        UsageProblem: an unknown model name, a file that is not a checkpoint, two models
            with one label (exit 2, as ``rave enhance`` and ``rave export``).
        click.ClickException: a model that cannot be had (download failed, offline).
    """
    from rave.session import Enhancer
    from rave.zoo import looks_like_path

    enhancers: dict[str, Enhancer] = {}
    for model in models:
        # A checkpoint path is shown (and stored) by its file stem, a zoo name as it is.
        label = Path(model).stem if looks_like_path(model) else model
        if label in enhancers or label == "input":
            raise click.UsageError(f"two models would both be called {label!r}; rename one")
        try:
            enhancers[label] = Enhancer(model, device=device, tile=tile)
        except ValueError as error:  # UnknownModelError, CheckpointError: one line each
            raise UsageProblem(f"--model {model}: {' '.join(str(error).split())}") from None
        except (RuntimeError, OSError) as error:  # the zoo's download and cache errors
            raise click.ClickException(f"--model {model}: {' '.join(str(error).split())}") from None
    return enhancers


def _run_models(
    inputs: Path, enhancers: dict[str, Enhancer], out: Path, *, progress_bar: bool
) -> tuple[dict[str, dict[str, Path]], list[str], list[str]]:
    """Enhance every image of ``inputs`` with each model into ``out/enhanced/<label>/``.

    Each model runs through :class:`rave.Enhancer`, the session ``rave enhance`` and
    ``rave.enhance`` use (same engine, tiling and memory policy).

    Returns:
        label -> the files this run wrote, by stem (only those are scored: with
        ``--overwrite``, a file an earlier run left in the folder, such as the output of a
        photo that fails this time, must not pass for this run's result); one line per
        image that failed (in the evaluator's words, so that an input it cannot read either
        is listed once); and one note per folder holding such earlier files.
    """
    from tqdm.auto import tqdm

    from rave.evaluation.imread import read_image
    from rave.evaluation.runner import failure_line, list_images
    from rave.io.formats import scan_image_folder
    from rave.io.printable import printable

    images = list_images(inputs)
    written: dict[str, dict[str, Path]] = {}
    errors: list[str] = []
    notes: list[str] = []
    for label, enhancer in enhancers.items():
        folder = out / "enhanced" / label
        folder.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        bar = tqdm(
            images.items(), desc=f"enhancing ({label})", unit="img", disable=not progress_bar
        )
        for stem, path in bar:
            try:
                enhanced = enhancer.enhance_pixels(read_image(path).pixels)
                _write_png(folder / f"{stem}.png", enhanced)
                files[stem] = folder / f"{stem}.png"
            except Exception as error:  # one photo's failure is that photo's error line...
                errors.append(failure_line(path, error))  # ...unless rave's own code is wrong
        written[label] = files
        earlier = [p for p in scan_image_folder(folder).files if p not in set(files.values())]
        if earlier:
            notes.append(
                f"{printable(folder)}: {len(earlier)} file(s) from an earlier run not scored "
                f"({', '.join(printable(p.name) for p in earlier[:5])}"
                f"{' ...' if len(earlier) > 5 else ''})"
            )
    return written, errors, notes


@click.command(
    "evaluate", help="Score enhanced images (paired or no-reference) and compare methods."
)
@click.option(
    "--pred",
    "preds",
    type=_DIR,
    multiple=True,
    help="Folder of enhanced images (repeat to compare methods).",
)
@click.option(
    "--name", "names", multiple=True, help="Display name of each --pred folder, in order."
)
@click.option(
    "--gt", type=_DIR, default=None, help="Folder of ground-truth images, matched by file stem."
)
@click.option(
    "--input",
    "inputs",
    type=_DIR,
    default=None,
    help="Folder of the original inputs (shadow lift; with --model: images to enhance).",
)
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Model name or checkpoint to run on --input (repeatable).",
)
@click.option(
    "--protocol",
    type=click.Choice(["reference", "standard", "both"]),
    default="both",
    show_default=True,
    help="Paired-metric protocol (reference = the RAVE code's quirks).",
)
@click.option(
    "--match",
    type=click.Choice(["stem", "reference"]),
    default="stem",
    show_default=True,
    help="Pair predictions with --gt files by exact stem, or as the RAVE code's "
    "compute_metrics.py does (0152(1) with 0152, substring matches warned).",
)
@output_option(
    "Folder for metrics.csv, per_image.csv, summary.json, report.html, grid.jpg (and, with "
    "--model, the enhanced images).",
    folder=True,
    old_names=("--out",),
    dest="out",
)
@overwrite_option("the report (and enhanced images) in OUTPUT")
@device_option(what="the --model networks and LPIPS")
@click.option("--no-lpips", is_flag=True, help="Skip LPIPS.")
@click.option(
    "--no-nr", "no_nr", is_flag=True, help="Skip the no-reference metrics (NIQE, BRISQUE)."
)
@click.option(
    "--resize",
    is_flag=True,
    help="Resize predictions to their reference's size for the paired metrics when sizes "
    "differ (no-reference metrics score the file as it is).",
)
@click.option(
    "--skip-unmatched",
    is_flag=True,
    help="Score matched pairs only instead of failing on unmatched files.",
)
@tile_option()
@click.option(
    "--max-report-images",
    type=click.IntRange(min=0),
    default=100,
    show_default=True,
    help="Images shown in report.html.",
)
@click.option("-v", "--verbose", is_flag=True, help="Print each file as it is scored.")
@quiet_option()
def evaluate_command(
    preds: tuple[Path, ...],
    names: tuple[str, ...],
    gt: Path | None,
    inputs: Path | None,
    models: tuple[str, ...],
    protocol: str,
    match: str,
    out: Path | None,
    overwrite: bool,
    device: str,
    no_lpips: bool,
    no_nr: bool,
    resize: bool,
    skip_unmatched: bool,
    tile: int | str | None,
    max_report_images: int,
    verbose: bool,
    quiet: bool,
) -> None:
    """Exit status: 0 when every image was scored, 1 when some could not be (listed) or a
    package of the eval extra is missing, 2 for usage errors (an unknown model included)."""
    from rave.cli._batch import Interrupted, interrupt_on_sigterm
    from rave.evaluation.runner import check_packages

    if not preds and not models:
        raise click.UsageError("give --pred DIR (repeatable), or --input DIR with --model NAME")
    if models and inputs is None:
        raise click.UsageError("--model needs --input DIR (the images to enhance)")
    if models and out is None:
        raise click.UsageError("--model needs -o/--output DIR (where enhanced images go)")
    if out is not None and not overwrite:
        existing = [name for name in _OUTPUT_NAMES if (out / name).exists()]
        if existing:
            raise click.UsageError(
                f"{out} already holds {', '.join(existing)}; pass --overwrite to replace them"
            )
    methods: dict[str, Path | dict[str, Path]] = dict(
        zip(_method_names(preds, names), preds, strict=True)
    )
    if out is not None:
        check_output_folder(out, "-o/--output")
        _check_output_is_not_scored(out, preds=preds, gt=gt, inputs=inputs)
    # Before any model runs: a missing package would otherwise fail each image in turn.
    check_packages(paired=gt is not None, no_reference=not no_nr)
    try:
        # SIGTERM (a scheduler's time limit, docker stop) ends the run as Ctrl-C does.
        with interrupt_on_sigterm():
            enhancers: dict[str, Enhancer] = {}
            if models:  # loading may download a model: an interrupt is said here too
                enhancers = _load_models(models, tile, resolve_device(device))
                for label in enhancers:
                    if label in methods:
                        raise click.UsageError(f"method name {label!r} given twice")
            _evaluate(
                methods,
                enhancers,
                gt=gt,
                inputs=inputs,
                protocol=protocol,
                match=match,
                out=out,
                no_lpips=no_lpips,
                lpips_device=None if no_lpips or gt is None else resolve_device(device),
                no_nr=no_nr,
                resize=resize,
                skip_unmatched=skip_unmatched,
                max_report_images=max_report_images,
                verbose=verbose,
                quiet=quiet,
            )
    except KeyboardInterrupt as error:
        # click would say "Aborted!" and exit 1; rave's commands exit 130 (143: SIGTERM).
        # The report's files are each written whole (atomic) or not at all.
        click.echo("interrupted: no report written (an earlier one is left as it was)", err=True)
        raise SystemExit(error.exit_status if isinstance(error, Interrupted) else 130) from None


def _check_output_is_not_scored(
    out: Path, *, preds: tuple[Path, ...], gt: Path | None, inputs: Path | None
) -> None:
    """Refuse an output folder that is also a folder of images to score: its grid.jpg would
    be scored as one of them (or be an unmatched file) on the next run.

    Raises:
        click.UsageError: ``out`` is one of ``preds``, ``gt`` or ``inputs``.
    """
    scored = [(f"--pred {p}", p) for p in preds]
    scored += [(f"--gt {gt}", gt)] if gt is not None else []
    scored += [(f"--input {inputs}", inputs)] if inputs is not None else []
    for option, folder in scored:
        if out.exists() and out.resolve() == folder.resolve():
            raise click.UsageError(
                f"-o/--output {out} is the folder of {option}: the report's grid.jpg would be "
                "scored with its images; choose another output folder"
            )


def _evaluate(
    methods: dict[str, Path | dict[str, Path]],
    enhancers: dict[str, Enhancer],
    *,
    gt: Path | None,
    inputs: Path | None,
    protocol: str,
    match: str,
    out: Path | None,
    no_lpips: bool,
    lpips_device: torch.device | None,
    no_nr: bool,
    resize: bool,
    skip_unmatched: bool,
    max_report_images: int,
    verbose: bool,
    quiet: bool,
) -> None:
    """Run the models, score, print the table, write the report, list the errors.

    Raises:
        click.ClickException: an evaluation that cannot start (empty folder, unmatched
            files...).
        SystemExit: 1 when some image could not be scored, or none could.
    """
    from rave.cli._batch import Interrupted
    from rave.evaluation.report import ReportWriteError, format_table, write_report
    from rave.evaluation.runner import EvaluationError, evaluate_folders
    from rave.io.printable import printable

    model_errors: list[str] = []
    model_notes: list[str] = []
    try:
        if enhancers:
            assert inputs is not None and out is not None
            written, model_errors, model_notes = _run_models(
                inputs, enhancers, out, progress_bar=not (quiet or verbose)
            )
            methods.update(written)
        result = evaluate_folders(
            methods,
            reference=gt,
            inputs=inputs,
            protocol=protocol,
            use_lpips=not no_lpips,
            lpips_device=lpips_device or "cpu",
            no_reference=not no_nr,
            resize=resize,
            skip_unmatched=skip_unmatched,
            match=match,
            progress=(
                (lambda path: click.echo(f"scoring {printable(path)}", err=True))
                if verbose
                else None
            ),
            progress_bar=not (quiet or verbose),
        )
    except EvaluationError as error:
        for line in model_errors:  # why an enhanced image is missing (unmatched, say)
            click.echo(f"error: {printable(line)}", err=True)
        raise click.ClickException(printable(error)) from error
    result.notes[:0] = model_notes
    # Notes and errors quote file names: escaped, so that none can forge a line or move the
    # cursor on the terminal (printable leaves already escaped text as it is).
    for note in dict.fromkeys(result.notes):
        if note.startswith("warning: "):  # a pairing to check (--match reference): even -q
            click.echo(printable(note), err=True)
        elif not quiet:
            click.echo(f"note: {printable(note)}", err=True)
    if result.records:
        click.echo(format_table(result))
    errors = list(dict.fromkeys(model_errors + result.errors))  # an unreadable input: once
    # A report of nothing would replace (with --overwrite) a real one, or pass for results.
    if out is not None and result.records:
        try:
            paths = write_report(
                result, out, protocol=protocol, max_report_images=max_report_images
            )
        except KeyboardInterrupt as error:
            # Each file is whole (atomic), but the set may mix this run's and an earlier one's.
            click.echo(
                f"interrupted while writing the report: the files in {printable(out)} may not "
                "all be from this run",
                err=True,
            )
            raise SystemExit(error.exit_status if isinstance(error, Interrupted) else 130) from None
        except ReportWriteError as error:  # disk full, permissions: one line, no traceback
            for line in errors:  # the scores' own problems are still said
                click.echo(f"error: {printable(line)}", err=True)
            raise click.ClickException(
                f"{error}; the report in {printable(out)} is incomplete"
            ) from None
        if not quiet:
            click.echo(f"wrote {', '.join(printable(p) for p in paths.values())}", err=True)
    for error in errors:
        click.echo(f"error: {printable(error)}", err=True)
    if not result.records:
        click.echo(
            "error: no image could be scored" + ("; no report written" if out else ""), err=True
        )
    if errors or not result.records:
        raise SystemExit(1)
