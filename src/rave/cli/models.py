"""``rave models``: list the models known by name, and prefetch them for offline use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from rave.zoo import ModelInfo

__all__ = ["models_command"]


@click.command("models")
@click.argument("names", nargs=-1, metavar="[NAME]...")
@click.option(
    "--download",
    is_flag=True,
    help="Download the named models (or 'all') into the cache, verifying their sha256.",
)
@click.option("-v", "--verbose", is_flag=True, help="Also show URL, sha256 and file of each.")
def models_command(names: tuple[str, ...], download: bool, verbose: bool) -> None:
    """List the models rave knows by name, and whether each is available offline.

    \b
    Examples:
      rave models                               # table of names, status, description
      rave models --download rave-unpaired      # prefetch one model
      rave models --download all                # prefetch every released model

    The cache folder is $RAVE_HOME, or the user cache folder; RAVE_OFFLINE=1 forbids
    downloads. Any checkpoint file can also be passed to --model as a path.
    """
    from rave import zoo
    from rave.zoo.download import cache_problem

    if download and not names:
        raise click.UsageError(
            "name the models to download (or 'all'), e.g. --download rave-unpaired"
        )
    try:
        if names == ("all",):
            infos = [info for info in zoo.list_models() if not info.builtin]
        else:
            infos = [zoo.get_model_info(name) for name in names] or zoo.list_models()
    except zoo.UnknownModelError as err:
        raise click.BadParameter(str(err), param_hint="NAME") from err

    if download:
        _download(infos)
        return
    click.echo(f"Model cache: {zoo.cache_dir()}  (set RAVE_HOME to move it)")
    problem = cache_problem()
    if problem:
        click.echo(f"The model cache cannot take downloads: {problem}.")
    if zoo.is_offline():
        click.echo("RAVE_OFFLINE is set: models that are not cached cannot be downloaded.")
    click.echo()
    width = max(len(info.name) for info in infos)
    click.echo(f"{'NAME':<{width}}  {'STATUS':<11}  DESCRIPTION")
    for info in infos:
        status, path = _status(info)
        click.echo(f"{info.name:<{width}}  {status:<11}  {info.description}")
        if verbose:
            _echo_details(info, path, indent=" " * (width + 2))


def _status(info: ModelInfo) -> tuple[str, Path | None]:
    """(``cached`` | ``not cached`` | ``corrupt`` | ``built in`` | ``not shipped``, file)."""
    from rave import zoo

    if info.builtin:
        path = zoo.builtin_weights_path()
        return ("built in" if path else "not shipped"), path
    path = zoo.cached_path(info)
    if not path.is_file():
        return "not cached", path
    # 1 MB per file: hashing is cheap and shows a damaged copy before it is used.
    return ("cached" if zoo.sha256_file(path) == info.sha256 else "corrupt"), path


def _echo_details(info: ModelInfo, path: Path | None, indent: str) -> None:
    if info.builtin:
        shipped = _with_size(path) if path else "none shipped in this version"
        click.echo(f"{indent}file:   {shipped}")
    else:
        click.echo(f"{indent}url:    {info.url}")
        click.echo(f"{indent}sha256: {info.sha256}")
        click.echo(f"{indent}file:   {_with_size(path)}")
    click.echo(f"{indent}source: {info.source}; licence: {info.licence}")


def _with_size(path: Path | None) -> str:
    """``path (1.13 MB)`` for a file that is there, else the path alone."""
    try:
        return f"{path} ({path.stat().st_size / 1e6:.2f} MB)" if path else ""
    except OSError:
        return str(path)


def _download(infos: list[ModelInfo]) -> None:
    """Fetch each model; report every failure and carry on with the rest."""
    from rave import zoo

    failed: list[str] = []
    for info in infos:
        if info.builtin:
            status, path = _status(info)
            click.echo(f"{info.name}: {status} ({path})" if path else f"{info.name}: {status}")
            continue
        try:
            path = zoo.fetch(info, download=True)
        except KeyboardInterrupt:
            # click would say "Aborted!" and exit 1; rave's commands exit 130 on Ctrl-C
            click.echo(f"interrupted: {info.name} was not kept (nothing partial is)", err=True)
            raise SystemExit(130) from None
        except zoo.ZooError as err:
            click.echo(f"error: {err}", err=True)
            failed.append(info.name)
        else:
            click.echo(f"{info.name}: {path}")
    if failed:
        raise click.ClickException(f"could not download: {', '.join(failed)}")
