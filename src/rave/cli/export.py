"""``rave export``: the enhancement network as an ONNX model with a dynamic image size."""

from __future__ import annotations

from pathlib import Path

import click

from rave.cli._options import UsageProblem, check_output_file, output_option, write_failure

__all__ = ["export_command"]


@click.command("export")
@click.argument("model", metavar="MODEL")
@output_option(
    "The .onnx file to write (missing folders are created).", folder=False, required=True
)
@click.option(
    "--enhanced",
    is_flag=True,
    help="Output the enhanced image clamp(I / L**S, 0, 1), with a 'strength' input S, "
    "instead of the light map L.",
)
@click.option(
    "--opset", type=click.IntRange(11, 20), default=17, show_default=True, help="ONNX opset."
)
@click.option(
    "--float16",
    is_flag=True,
    help="Store the weights as float16: half the file; arithmetic stays float32 (light map "
    "within about 3e-4 of float32's on the zoo's models).",
)
@click.option("--overwrite", is_flag=True, help="Replace OUTPUT if it exists.")
def export_command(
    model: str, output: Path, enhanced: bool, opset: int, float16: bool, overwrite: bool
) -> None:
    """Export MODEL (a name from 'rave models' or a checkpoint file) to ONNX.

    The model takes 'image', (B, 3, H, W) float32 RGB in [0, 1] of any size from 2x2 up,
    and gives 'light_map' (B, 1, H, W); with --enhanced it also takes 'strength' (1,) and
    gives 'enhanced' (B, 3, H, W). It runs the whole image at once (in ONNX Runtime
    about 1 GB of memory per megapixel): see the README for the tiled recipe.

    \b
    Examples:
      rave export default -o rave.onnx
      rave export rave-unpaired --enhanced --float16 -o rave_unpaired.onnx
    """
    from rave.export import OnnxExportError, export_onnx
    from rave.network.checkpoint import CheckpointError
    from rave.zoo import UnknownModelError, ZooError

    if output.exists() and not overwrite:
        raise click.UsageError(f"{output} exists; pass --overwrite to replace it")
    check_output_file(output, "-o/--output")  # before the model is loaded and traced
    try:
        proto = export_onnx(
            model,
            output,
            output="enhanced" if enhanced else "light",
            opset=opset,
            float16=float16,
        )
    except KeyboardInterrupt:  # click would say "Aborted!" and exit 1
        click.echo(f"interrupted: {output} was not written", err=True)
        raise SystemExit(130) from None
    except (UnknownModelError, CheckpointError) as err:  # MODEL names nothing usable
        raise UsageProblem(str(err)) from None
    except (OnnxExportError, ZooError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # its text names rave's temporary file, not OUTPUT
        raise click.ClickException(write_failure(output, err)) from None
    sha = {p.key: p.value for p in proto.metadata_props}["checkpoint_sha256"]
    click.echo(
        f"{output}: {model} (sha256 {sha[:12]}), opset {opset}, "
        f"{'float16' if float16 else 'float32'} weights, "
        f"{output.stat().st_size / 1e6:.2f} MB"
    )
