"""``rave residual``: compute RAVE's residual vector from a backlit and a well-lit folder."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from rave.cli._options import (
    OutputPath,
    check_output_file,
    device_option,
    output_option,
    overwrite_option,
    quiet_option,
    write_failure,
)

if TYPE_CHECKING:
    from rave.guidance.residual import ResidualVector

__all__ = ["guidance_warnings", "residual_command", "save_residual_or_fail"]


@click.command("residual")
@click.option(
    "--backlit",
    "backlit_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of backlit images.",
)
@click.option(
    "--well-lit",
    "well_lit_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of well-lit images.",
)
@click.option(
    "--encoder",
    "encoder_name",
    default="clip:ViT-B-32",
    show_default=True,
    help="Guidance encoder: clip:ARCH[@TAG] (TAG: pretrained tag, weights file, or random) "
    "or effnet-lite0 (works offline); +blurSIGMA after either blurs what it sees by SIGMA px "
    "(offline recipe). Training must use the same one.",
)
@output_option(
    "Output file (.pt), readable with torch.load(weights_only=True); missing folders are created.",
    folder=False,
    required=True,
)
@click.option(
    "--batch-size",
    default=16,
    show_default=True,
    type=click.IntRange(min=1),
    help="Images embedded at once (lower it if memory runs out).",
)
@click.option(
    "--plot",
    type=OutputPath(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw both sets' projections on r (cos(e_i, r)) and thr as a histogram PNG "
    "here: how well r separates the sets (missing folders are created).",
)
@device_option()
@overwrite_option("OUTPUT (and the --plot file)")
@quiet_option()
def residual_command(
    backlit_dir: Path,
    well_lit_dir: Path,
    encoder_name: str,
    output: Path,
    batch_size: int,
    plot: Path | None,
    device: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Compute the residual vector r = normalize(v_well_lit - v_backlit) and save it.

    Every image directly inside each folder is embedded (centre crop, as CLIP's standard
    preprocessing); files that are not readable images are skipped with a warning.
    An existing OUTPUT is kept unless --overwrite is given.

    The summary gives each set's mean projection cos(e_i, r) and names the images that
    project on the other set's side of the midpoint (atypical or mislabelled ones).
    """
    if (output.exists() or output.is_symlink()) and not overwrite:  # a dangling link too
        raise click.UsageError(f"{output} exists; pass --overwrite to replace it")
    check_output_file(output, "-o/--output")  # before minutes of embedding
    if plot is not None:
        import matplotlib  # noqa: F401  (a missing package names its extra before the work)

        check_output_file(plot, "--plot")
        if (plot.exists() or plot.is_symlink()) and not overwrite:
            raise click.UsageError(f"--plot {plot} exists; pass --overwrite to replace it")
    from rave.cli import route_library_logging
    from rave.cli._options import resolve_device
    from rave.encoders import create_encoder
    from rave.guidance.residual import compute_residual

    torch_device = resolve_device(device)
    try:
        with route_library_logging():  # OpenCLIP's own log lines (ERROR:root:...)
            encoder = create_encoder(encoder_name, device=torch_device)
        with guidance_warnings():
            rv = compute_residual(
                backlit_dir,
                well_lit_dir,
                encoder,
                batch_size=batch_size,
                device=torch_device,
                progress=not quiet,
            )
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    save_residual_or_fail(rv, output, overwrite)

    click.echo(f"encoder          {rv.encoder} ({rv.residual.numel()}-d)")
    click.echo(f"backlit images   {rv.num_backlit}  ({backlit_dir})")
    click.echo(f"well-lit images  {rv.num_well_lit}  ({well_lit_dir})")
    click.echo(f"skipped files    {rv.num_skipped}")
    click.echo(f"threshold        {rv.threshold:.6f}  (v_w . r)")
    click.echo(f"cos(v_w, v_b)    {rv.cos_means:.6f}")
    _echo_projections(rv)
    click.echo(f"saved            {output}")
    if plot is not None:
        from rave.guidance.residual import plot_projections

        try:
            plot_projections(rv, plot, title=f"{output.name} ({rv.encoder})", overwrite=overwrite)
        except FileExistsError as err:  # written by someone else meanwhile
            raise click.ClickException(str(err)) from None
        except OSError as err:  # its text names rave's temporary file, not the plot
            raise click.ClickException(write_failure(plot, err)) from None
        click.echo(f"histogram        {plot}")


def _echo_projections(rv: ResidualVector, shown: int = 5) -> None:
    """Each set's mean projection on r, and the images on the other set's side."""
    from rave.guidance.residual import crossing_images, split_projections
    from rave.io.printable import printable

    backlit, well_lit = split_projections(rv)
    click.echo(
        f"projection on r  backlit mean {backlit.mean:.4f} "
        f"[{min(backlit.values):.4f}, {max(backlit.values):.4f}], well-lit mean "
        f"{well_lit.mean:.4f} [{min(well_lit.values):.4f}, {max(well_lit.values):.4f}]"
    )
    for names, side in zip(crossing_images(rv), ("well-lit", "backlit"), strict=True):
        if names:
            listed = ", ".join(printable(n.split("/", 1)[1]) for n in names[:shown])
            more = f" and {len(names) - shown} more" if len(names) > shown else ""
            what = "backlit" if side == "well-lit" else "well-lit"
            click.echo(f"  {len(names)} {what} image(s) on the {side} side: {listed}{more}")


@contextmanager
def guidance_warnings() -> Iterator[None]:
    """Within the block, warnings of ``rave.guidance`` (skipped files, weak estimates, a
    vocabulary cache that cannot be written) reach stderr as ``warning: ...`` lines, routed
    through tqdm so that they do not break a progress bar mid-line."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    handler = logging.StreamHandler()  # the stderr of this moment (a test runner's too)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    lib_logger = logging.getLogger("rave.guidance")
    level = lib_logger.level
    lib_logger.addHandler(handler)
    lib_logger.setLevel(logging.WARNING)
    try:
        with logging_redirect_tqdm(loggers=[lib_logger]):
            yield
    finally:
        lib_logger.removeHandler(handler)
        lib_logger.setLevel(level)


def save_residual_or_fail(residual: ResidualVector, output: Path, overwrite: bool) -> None:
    """Write a residual vector for a command (``rave residual``, ``rave shift``): one
    ``click`` error line naming ``output`` when it cannot be written."""
    from rave.guidance.residual import save_residual

    try:
        save_residual(residual, output, overwrite=overwrite)
    except FileExistsError as err:  # written by someone else meanwhile
        raise click.ClickException(str(err)) from None
    except OSError as err:  # its text names rave's temporary file, not OUTPUT
        raise click.ClickException(write_failure(output, err)) from None
