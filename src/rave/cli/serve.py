"""``rave serve``: enhance photos from a web page in the browser."""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
import sys
import time

import click

from rave.cli._options import (
    device_option,
    max_pixels_option,
    model_option,
    strength_option,
    tile_option,
)

__all__ = ["serve_command"]


def _addresses(host: str, port: int) -> list[str]:
    """Addresses a browser can open for a listening host (``0.0.0.0`` is not one)."""
    if host not in ("0.0.0.0", "::", ""):
        shown = f"[{host}]" if ":" in host else host
        return [f"http://{shown}:{port}/"]
    urls = [f"http://127.0.0.1:{port}/"]
    try:
        # Which local address routes outwards; a UDP connect sends no packet.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.254.254.254", 1))
            lan = probe.getsockname()[0]
        if lan and not lan.startswith("127."):
            urls.append(f"http://{lan}:{port}/ (from other machines)")
    except OSError:
        pass
    return urls


def _bind_problem(host: str, port: int) -> OSError | None:
    """Why the server could not listen on ``host:port`` now, else None (binds, then frees)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as EnhanceServer does
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            # as the server's socket (allow_reuse_address): a port in TIME_WAIT is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        return err
    return None


def _cannot_listen(host: str, port: int, err: OSError) -> None:
    """The one line for a server that cannot listen, with what to do for a busy port."""
    in_use = err.errno == errno.EADDRINUSE  # Windows' WSAEADDRINUSE is mapped to it
    hint = ": another program uses it; choose another --port" if in_use else ""
    reason = err.strerror or str(err)
    click.echo(f"error: cannot listen on {_shown(host, port)} ({reason}){hint}", err=True)


def _shown(host: str, port: int) -> str:
    """``host:port`` as a URL writes it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _exposure_warning(bound: str, port: int) -> str | None:
    """The warning for a server that other machines can reach, else None (loopback).

    ``bound`` is the address the socket listens on (an IP literal). The server has no
    password: whoever reaches the port can send photos (its CPU, its disk) and, with a
    result's id, download them.
    """
    try:
        address = ipaddress.ip_address(bound.split("%")[0])
    except ValueError:
        return None
    if address.is_loopback:
        return None
    where = "every network interface" if address.is_unspecified else bound
    return (
        f"warning: listening on {where}: anyone who can reach this machine on port {port} "
        "can use this server (no password); use it on a trusted network only"
    )


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
    help="JPEG/WebP/HEIC quality of the results.",
)
@click.option(
    "--max-upload-mb",
    type=click.IntRange(1),
    default=100,
    show_default=True,
    help="Refuse larger uploads without reading them.",
)
@max_pixels_option("50M")
@strength_option(" The page's starting value; each photo has its own slider.")
@click.option(
    "--time-limit",
    type=click.FloatRange(1, 3600),
    default=600,
    show_default=True,
    help="Seconds one photo may take (queue and network) before it is refused.",
)
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
    strength: float,
    time_limit: float,
) -> None:
    """Serve a page that enhances photos dropped on it.

    Photos are enhanced one at a time at full resolution, with their EXIF and colour
    profile kept; each gets a strength slider computed in the browser (the network runs
    once per photo). Results are kept in a temporary folder only while the server runs.
    Listens on localhost unless --host says otherwise. One line per request is printed.

    \b
    Example:
      rave serve                     # then open http://127.0.0.1:8000
    """
    from rave.cli.enhance import _load_network
    from rave.server import make_server
    from rave.server.app import Limits

    # A busy port or an unknown host is said before the model is loaded (seconds, or a
    # download on first use), not after; the real bind below still reports a port taken
    # in between.
    problem = _bind_problem(host, port)
    if problem is not None:
        _cannot_listen(host, port, problem)
        ctx.exit(2)
    net = _load_network(ctx, model, device)
    upload_bytes = max_upload_mb * 2**20
    limits = Limits(max_queued_bytes=2 * upload_bytes, time_limit=time_limit)

    def log_line(line: str) -> None:
        click.echo(f"{time.strftime('%H:%M:%S')} {line}", err=True)

    try:
        server = make_server(
            net,
            host,
            port,
            max_upload_bytes=upload_bytes,
            max_pixels=max_pixels,
            quality=quality,
            tile=tile,
            strength=strength,
            limits=limits,
            log_line=log_line,
        )
    except OSError as err:
        _cannot_listen(host, port, err)
        ctx.exit(2)
    urls = _addresses(host, server.server_port)
    click.echo(f"rave: open {urls[0]} (Ctrl-C stops)")
    for url in urls[1:]:
        click.echo(f"      or {url}")
    warning = _exposure_warning(str(server.server_address[0]), server.server_port)
    if warning:
        click.echo(warning, err=True)
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # the one line comes once the stop is done
    finally:
        # A second Ctrl-C must not cut the stop short: it is bounded (the running photo
        # stops within a tile, connections are closed) and joins every thread, so no
        # engine thread is killed at exit.
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until exit: the command is ending
        server.stop()
    # One line (was "stopping", then "stopped"): the stop takes at most a tile.
    click.echo("rave serve: stopped; its uploads and results were removed", err=True)
