"""``rave serve``: enhance photos from a web page in the browser."""

from __future__ import annotations

import click

from rave.cli._options import device_option, max_pixels_option, model_option, tile_option

__all__ = ["serve_command"]


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8000,
    show_default=True,
    help="Port to listen on (0: any free port).",
)
@model_option()
@device_option()
@tile_option()
@click.option(
    "--quality",
    type=click.IntRange(1, 100),
    default=95,
    show_default=True,
    help="JPEG/WebP quality of the results.",
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Refuse larger uploads without reading them.",
)
@max_pixels_option()
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    model: str,
    device: str,
    tile: int | str | None,
    quality: int,
    max_upload_mb: int,
    max_pixels: int,
) -> None:
    """Serve a page that enhances photos dropped on it.

    Photos are enhanced one at a time at full resolution, with their EXIF and colour
    profile kept, and are not stored. Listens on localhost unless --host says otherwise.

    \b
    Example:
      rave serve                     # then open http://127.0.0.1:8000
    """
    from rave.cli.enhance import _load_network
    from rave.server import make_server

    net = _load_network(ctx, model, device)
    try:
        server = make_server(
            net,
            host,
            port,
            max_upload_bytes=max_upload_mb * 2**20,
            max_pixels=max_pixels,
            quality=quality,
            tile=tile,
        )
    except OSError as err:
        click.echo(f"error: cannot listen on {host}:{port} ({err.strerror or err})", err=True)
        ctx.exit(2)
    click.echo(f"rave: open http://{host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.server_close()
