"""``rave interpret``: which vocabulary tokens a guidance direction points to and away from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rave.cli._options import (
    OutputPath,
    UsageProblem,
    check_output_file,
    device_option,
    overwrite_option,
    quiet_option,
    resolve_device,
    vocabulary_option,
    write_failure,
)

__all__ = ["interpret_command", "load_direction"]


def load_direction(path: Path) -> tuple[Any, str, str]:
    """The direction stored in ``path``: ``(tensor (D,), encoder name, kind)``.

    ``kind`` is ``"residual"`` for a residual vector file, ``"prompts"`` for a learned
    prompt pair (a clip-lit-latent ``prompts.safetensors`` or checkpoint), whose direction is
    ``normalize(positive - negative)``.

    Raises:
        ValueError: naming the file, if it holds neither.
    """
    import torch.nn.functional as F

    from rave.guidance.residual import load_residual
    from rave.training.methods.clip_lit import load_prompt_features

    try:
        rv = load_residual(path)
    except ValueError as residual_error:
        try:
            features, encoder = load_prompt_features(path)
        except ValueError:
            raise ValueError(
                f"{path}: neither a residual vector file nor a learned prompt pair "
                f"({residual_error})"
            ) from None
        if features.ndim != 2 or features.shape[0] != 2:
            raise ValueError(f"{path}: prompt features of shape {tuple(features.shape)}") from None
        return F.normalize(features[1] - features[0], dim=0), encoder, "prompts"
    return rv.residual.float(), rv.encoder, "residual"


def _overlap(top_k: int, vocabulary: str) -> str:
    """The refusal of a --top whose two ends would share tokens."""
    return (
        f"--top {top_k} shows {2 * top_k} tokens in all, {vocabulary} fewer: the two ends "
        "would list the same tokens; lower --top"
    )


@click.command("interpret")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--encoder",
    "encoder_name",
    default=None,
    help="CLIP encoder (clip:ARCH[@TAG]) whose text tower reads the direction; "
    "default: the encoder recorded in FILE.",
)
@click.option(
    "--top",
    "top_k",
    default=15,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many tokens to show at each end of the ranking.",
)
@click.option(
    "--plot",
    type=OutputPath(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw the ranking as a bar chart PNG here (missing folders are created).",
)
@click.option(
    "--vocab-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Encode only the first N vocabulary tokens (a quick look; the full 49,408 take "
    "minutes on a CPU the first time, then come from the cache).",
)
@vocabulary_option(
    "decoded = the authors' vocabulary, as `rave shift --remove-tokens` uses by default "
    "(each token decoded to text and re-tokenized; shown as quoted texts, 'star ' the word, "
    "'star' the piece); token-ids = each token id encoded alone (docs/method.md)."
)
@click.option(
    "--batch-size",
    default=256,
    show_default=True,
    type=click.IntRange(min=1),
    help="Vocabulary tokens encoded at once.",
)
@device_option()
@click.option("--no-cache", is_flag=True, help="Neither read nor write the vocabulary cache.")
@overwrite_option("the --plot file")
@quiet_option()
def interpret_command(
    file: Path,
    encoder_name: str | None,
    top_k: int,
    plot: Path | None,
    vocab_limit: int | None,
    vocabulary: str,
    batch_size: int,
    device: str,
    no_cache: bool,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Print the tokens most and least aligned with the direction stored in FILE.

    FILE is a residual vector (`rave residual`), or a learned prompt pair of a
    clip-lit-latent run (its prompts.safetensors or a checkpoint), read as the direction
    positive minus negative. Tokens are ranked by their cosine with the direction, in the
    vocabulary `rave shift --remove-tokens` uses (--vocab, the same default), so the tokens
    listed for a residual are those its shift removes. Vocabulary embeddings are cached per
    encoder in $RAVE_HOME/vocab (or the user cache folder).

    \b
    Examples:
      rave interpret residual.pt --top 20 --plot tokens.png
      rave interpret runs/latent/prompts.safetensors --encoder clip:ViT-B-32
    """
    from rave.cli import route_library_logging
    from rave.cli.residual import guidance_warnings
    from rave.encoders import canonical_name, create_encoder
    from rave.guidance.interpret import plot_ranking, rank_tokens
    from rave.guidance.shift import build_vocabulary

    if vocab_limit is not None and 2 * top_k > vocab_limit:
        raise click.UsageError(_overlap(top_k, f"--vocab-limit {vocab_limit} encodes"))
    if plot is not None:
        # Both before the vocabulary is encoded (minutes): a missing package names its
        # extra (rave.cli.LazyGroup), a path that cannot be written is one line.
        import matplotlib  # noqa: F401

        check_output_file(plot, "--plot")
        # A chart from an earlier reading is the user's: kept unless asked, as every output.
        if (plot.exists() or plot.is_symlink()) and not overwrite:
            raise click.UsageError(f"--plot {plot} exists; pass --overwrite to replace it")

    try:
        direction, stored_encoder, kind = load_direction(file)
    except (ValueError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from None
    name = encoder_name or stored_encoder
    if not name:
        raise click.UsageError(f"{file} does not record its encoder: pass --encoder")
    if stored_encoder and canonical_name(stored_encoder) != canonical_name(name):
        raise click.ClickException(
            f"{file} lives in the space of {stored_encoder!r}, not {name!r}: the tokens "
            "would mean nothing"
        )
    if not name.startswith("clip:"):
        raise click.ClickException(
            f"{file} lives in the space of {name!r}, which has no text encoder: only "
            "directions of a CLIP encoder can be read as tokens"
        )
    try:
        with route_library_logging():  # OpenCLIP's own log lines (WARNING:root:...)
            encoder = create_encoder(name, device=resolve_device(device))
        if kind == "residual":
            from rave.guidance.residual import check_encoder, load_residual

            check_encoder(load_residual(file), encoder)  # its weights, where the file has them
        if encoder.embed_dim != direction.numel():
            raise ValueError(
                f"{file}: a {direction.numel()}-d direction, but {name} embeds into "
                f"{encoder.embed_dim} dimensions"
            )
        with guidance_warnings():  # e.g. a vocabulary cache that cannot be written
            vocab = build_vocabulary(
                encoder,
                vocabulary,
                limit=vocab_limit,
                batch_size=batch_size,
                use_cache=not no_cache,
                progress=not quiet,
            )
        if 2 * top_k > len(vocab.tokens):  # a decoded vocabulary has fewer entries than ids
            raise UsageProblem(_overlap(top_k, f"the {vocabulary} vocabulary has"))
        ranking = rank_tokens(direction, vocab, top_k)
    except (ValueError, FileNotFoundError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None

    what = "residual vector" if kind == "residual" else "prompt direction (positive - negative)"
    if kind == "residual":
        from rave.guidance.residual import load_residual

        # A shifted residual says so: its tokens are read after the removal.
        derivation = load_residual(file).derivation
        what += f" ({derivation})" if derivation else ""
    click.echo(
        f"{file}: {what} in {encoder.name}, {len(vocab.tokens)} vocabulary tokens "
        f"({vocabulary} vocabulary)"
    )
    from rave.io.printable import display_width, ljust_display

    show = vocab.display
    # Columns, not characters: CJK tokens take two columns each.
    width = max(display_width(show(t)) for t, _ in ranking.most + ranking.least)
    width = max(width, len("least aligned"))
    click.echo(
        f"{'#':>3}  {'most aligned':<{width}}  {'cos':>7}    {'least aligned':<{width}}  cos"
    )
    for index, ((top, top_s), (low, low_s)) in enumerate(
        zip(ranking.most, ranking.least, strict=True), start=1
    ):
        left, right = ljust_display(show(top), width), ljust_display(show(low), width)
        click.echo(f"{index:>3}  {left}  {top_s:>7.4f}    {right}  {low_s:.4f}")
    if plot is not None:
        try:
            title = f"{file.name} ({encoder.name}, {vocabulary} vocabulary)"
            plot_ranking(ranking, plot, title=title, label=show, overwrite=overwrite)
        except FileExistsError as err:  # written by someone else meanwhile
            raise click.ClickException(str(err)) from None
        except OSError as err:  # its text names rave's temporary file, not the plot
            raise click.ClickException(write_failure(plot, err)) from None
        click.echo(f"bar chart written to {plot}")
