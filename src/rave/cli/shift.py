"""``rave shift``: bias correction of a residual vector (the paper's shifted residual)."""

from __future__ import annotations

from pathlib import Path

import click

from rave.cli._options import (
    UsageProblem,
    check_output_file,
    device_option,
    output_option,
    overwrite_option,
    quiet_option,
    resolve_device,
    vocabulary_option,
)

__all__ = ["shift_command"]


@click.command("shift")
@click.argument("residual", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@output_option("Where to write the corrected residual vector.", folder=False, required=True)
@click.option(
    "--encoder",
    "encoder_name",
    default=None,
    help="The CLIP encoder the residual was computed with (default: the one it records).",
)
@click.option(
    "--remove-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="The paper's shift: remove the direction summarising the K vocabulary tokens at "
    "each end of r (the paper uses 15).",
)
@click.option(
    "--remove",
    "concepts",
    multiple=True,
    metavar="TEXT",
    help="Remove the direction of this text concept from r (repeatable), e.g. --remove sunset.",
)
@click.option(
    "--vocab-limit",
    type=click.IntRange(min=1),
    default=None,
    help="With --remove-tokens: use only the first N vocabulary tokens (quick looks).",
)
@vocabulary_option(
    "With --remove-tokens: decoded = the authors' vocabulary (each token decoded to text "
    "and re-tokenized, raw features weighted; reproduces rave-unpaired-shifted); token-ids = "
    "each token id encoded alone, one entry per id (docs/method.md)."
)
@device_option()
@overwrite_option()
@quiet_option()
def shift_command(
    residual: Path,
    output: Path,
    encoder_name: str | None,
    remove_tokens: int | None,
    concepts: tuple[str, ...],
    vocab_limit: int | None,
    vocabulary: str,
    device: str,
    overwrite: bool,
    quiet: bool,
) -> None:
    """Remove bias directions from the residual vector in RESIDUAL, writing a new file.

    With --remove-tokens K: r' = normalize(r - (u.r) u), u summarising the K tokens most and
    least aligned with r (docs/method.md, shifted residual). With --remove TEXT: r loses the span
    of the concepts' text embeddings. Both may be given (tokens first). The threshold is
    recomputed as v_w . r'.

    \b
    Examples:
      rave shift residual.pt --remove-tokens 15 -o shifted.pt
      rave shift residual.pt --remove sunset --remove beach -o unbiased.pt
    """
    import torch.nn.functional as F

    from rave.cli import route_library_logging
    from rave.cli.residual import guidance_warnings, save_residual_or_fail
    from rave.encoders import create_encoder
    from rave.guidance.interpret import rank_tokens
    from rave.guidance.residual import check_encoder, load_residual
    from rave.guidance.shift import build_vocabulary, remove_concepts, shift_residual

    if remove_tokens is None and not concepts:
        raise click.UsageError("give --remove-tokens K and/or --remove TEXT")
    if output.resolve() == residual.resolve() and not overwrite:
        raise click.UsageError(f"{output} is the input file; pass --overwrite to replace it")
    if (output.exists() or output.is_symlink()) and not overwrite:  # a dangling link too
        raise click.UsageError(f"{output} exists; pass --overwrite to replace it")
    if remove_tokens is not None and vocab_limit is not None and remove_tokens > vocab_limit:
        raise click.UsageError(
            f"--remove-tokens {remove_tokens} takes more tokens at each end than "
            f"--vocab-limit {vocab_limit} encodes; lower it or raise --vocab-limit"
        )
    check_output_file(output, "-o/--output")  # before the vocabulary is encoded
    try:
        rv = load_residual(residual)
        name = encoder_name or rv.encoder
        check_encoder(rv, name)
        if not name.startswith("clip:"):
            raise ValueError(
                f"{residual} lives in the space of {name!r}, which has no text encoder; "
                "removing text directions needs a CLIP residual"
            )
        with route_library_logging():  # OpenCLIP's own log lines (WARNING:root:...)
            encoder = create_encoder(name, device=resolve_device(device))
        check_encoder(rv, encoder)  # its weights (encoder_sha256): before the vocabulary
        shifted = rv
        if remove_tokens is not None:
            with guidance_warnings():  # e.g. a vocabulary cache that cannot be written
                vocab = build_vocabulary(encoder, vocabulary, limit=vocab_limit, progress=not quiet)
            if remove_tokens > len(vocab.tokens):  # before anything is printed
                raise UsageProblem(
                    f"--remove-tokens {remove_tokens}: the {vocabulary} vocabulary has only "
                    f"{len(vocab.tokens)} tokens"
                )
            ranking = rank_tokens(rv.residual, vocab, remove_tokens)
            index = {token: i for i, token in enumerate(vocab.tokens)}
            click.echo(f"tokens defining the removed direction ({vocabulary} vocabulary):")
            for side, items in (
                ("well-lit side: ", ranking.most),
                ("backlit side:  ", ranking.least),
            ):
                click.echo(f"  {side}" + ", ".join(vocab.label(index[t]) for t, _ in items))
            shifted = shift_residual(shifted, encoder, remove_tokens, vocab=vocab)
        if concepts:
            shifted = remove_concepts(shifted, concepts, encoder)
            click.echo("concepts removed: " + ", ".join(repr(c) for c in concepts))
    except (ValueError, FileNotFoundError, RuntimeError) as err:  # RuntimeError: CLIP weights
        raise click.ClickException(str(err)) from None
    save_residual_or_fail(shifted, output, overwrite)
    cos = float(F.normalize(rv.residual.float(), dim=0) @ shifted.residual.float())
    click.echo(
        f"cos(r, r') = {cos:.4f}; threshold {rv.threshold:.4f} -> {shifted.threshold:.4f}; "
        f"written to {output}"
    )
