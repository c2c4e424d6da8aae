"""RAVE's residual vector: the direction from backlit to well-lit images in an embedding space.

For a folder of backlit images B and one of well-lit images W (docs/method.md, "RAVE")::

    e_i  = normalize(encoder(image_i))         centre-crop preprocessing, per image
    v_b  = normalize(mean_{i in B} e_i)        v_w = normalize(mean_{i in W} e_i)
    r    = normalize(v_w - v_b)                thr = v_w . r

Saved as a plain dict of tensors and strings, so ``torch.load(path, weights_only=True)``
reads it without running pickled code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rave.encoders.base import ImageEncoder, center_crop_resize
from rave.io import PhotoError, atomic_write
from rave.io.printable import printable

__all__ = [
    "ResidualVector",
    "check_encoder",
    "compute_residual",
    "list_image_files",
    "load_residual",
    "read_image",
    "residual_from_embeddings",
    "save_residual",
]

logger = logging.getLogger(__name__)

FORMAT = "rave-residual"
FORMAT_VERSION = 1
_UNIT_TOL = 1e-3


@dataclass(frozen=True)
class ResidualVector:
    """A residual vector and what it was computed from.

    Attributes:
        residual: ``(D,)`` float32, unit norm: ``normalize(v_w - v_b)``.
        threshold: ``v_w . residual``, the projection the guidance loss pulls images towards.
        mean_well_lit: ``(D,)`` float32, unit norm: ``v_w``.
        mean_backlit: ``(D,)`` float32, unit norm: ``v_b``.
        encoder: name of the encoder whose space this lives in (``ImageEncoder.name``).
        num_backlit: images used from the backlit folder.
        num_well_lit: images used from the well-lit folder.
        num_skipped: files of either folder that could not be read as images.
        files_sha256: SHA-256 of the sorted list of the images used (``backlit/<name>`` and
            ``well_lit/<name>`` lines): which file names it came from.
        created: creation time, ISO 8601 in UTC.
        data_sha256: SHA-256 of the sorted ``backlit/<name> <sha256 of the file's bytes>``
            (and ``well_lit/...``) lines: which data it came from, so that two sets named
            alike (``0001.png``...) are told apart and the same images in another place
            are recognised; ``""`` in files written before it was recorded.
        derivation: what was done to the vector after it was computed (``rave shift``'s
            steps, ``"; "``-separated, in order; a record for people, not parsed); ``""`` for
            the residual as computed.
        encoder_sha256: :meth:`rave.encoders.base.ImageEncoder.weights_sha256` of the
            encoder that computed it: which weights, where the name alone does not say
            (a checkpoint file replaced at the same path); ``""`` in older files.
        projections: ``("backlit/<name>", cos(e_i, r))`` per image used, backlit first, as
            :func:`compute_residual` found them: how well ``r`` separates the two sets, and
            which images sit on the other set's side. Not saved (``()`` once loaded or
            derived: a changed ``r`` would need the embeddings again).
    """

    residual: Tensor
    threshold: float
    mean_well_lit: Tensor
    mean_backlit: Tensor
    encoder: str
    num_backlit: int
    num_well_lit: int
    num_skipped: int
    files_sha256: str
    created: str
    data_sha256: str = ""
    derivation: str = ""
    encoder_sha256: str = ""
    projections: tuple[tuple[str, float], ...] = dataclasses.field(default=(), repr=False)

    def derived(self, step: str, **changes: Any) -> ResidualVector:
        """A copy with ``changes`` applied and ``step`` appended to :attr:`derivation`
        (its :attr:`projections` dropped: they were onto the old ``r``)."""
        derivation = f"{self.derivation}; {step}" if self.derivation else step
        changes.setdefault("projections", ())
        return dataclasses.replace(self, derivation=derivation, **changes)

    @property
    def cos_means(self) -> float:
        """``v_w . v_b``: how close the two sets' mean directions are (1: identical)."""
        return float(torch.dot(self.mean_well_lit.double(), self.mean_backlit.double()))


def read_image(path: str | Path) -> Tensor:
    """Read an image file as upright RGB, through the project's photo reader.

    :func:`rave.io.read_photo` applies the EXIF orientation and decodes 16-bit PNG/TIFF at
    full depth (via OpenCV); here grey is replicated to RGB and alpha dropped.

    Args:
        path: an image file.

    Returns:
        ``(3, H, W)`` float32 in [0, 1].

    Raises:
        rave.io.PhotoError: one line naming the file, if it is not a readable image.
    """
    from rave.io.views import read_tensor

    return read_tensor(path)


def list_image_files(folder: str | Path) -> list[Path]:
    """The image files directly inside ``folder``: :func:`rave.io.formats.list_image_files`.

    Raises:
        FileNotFoundError: if ``folder`` is not a directory.
    """
    from rave.io.formats import list_image_files as list_images

    return list_images(folder)


@dataclass(frozen=True)
class _FolderImages:
    """The image files of one folder (``label`` says which set), listed before any work."""

    folder: Path
    label: str
    files: list[Path]
    left_out: list[Path]
    not_regular: list[Path]

    @property
    def subfolders(self) -> str:
        return f"{len(self.left_out)} sub-folder(s) of {self.folder} not read"


def _list_folder(folder: Path, label: str) -> _FolderImages:
    """List ``folder``'s images; refuse one without any image file before anything is embedded.

    Both folders are listed before either is embedded, so an empty (or mistyped) second
    folder is reported at once rather than after minutes of embedding the first.

    Raises:
        FileNotFoundError: ``folder`` is not a folder.
        ValueError: ``folder`` holds no file named like an image.
    """
    from rave.io.formats import scan_image_folder

    scan = scan_image_folder(folder)  # the images directly inside, as list_image_files
    listed = _FolderImages(folder, label, scan.files, scan.left_out, scan.not_regular)
    if not scan.files:
        hint = (
            f"; {listed.subfolders}: give the folder that holds the images" if scan.left_out else ""
        )
        raise ValueError(
            f"no readable images in {folder} (the {label} folder has no image files){hint}"
        )
    return listed


# An image whose long side exceeds this many times its short side is cut (along the long
# side) to a central window of this aspect before CLIP's preprocessing: resizing its short
# side to 224 first would make the whole strip 224 px tall (a 2 x 30000 px PNG became a
# 224 x 3.4M px float image, 18 GB). Only the central square survives the centre crop, and
# the window keeps 1.5 x the short side on either side of it, far beyond the reach of the
# resampling kernel: what the encoder sees is unchanged but for sub-pixel alignment
# (tests/test_guidance_audit.py compares both paths).
_MAX_ASPECT = 4.0


def _central_window(image: Tensor) -> Tensor:
    """``image`` ``(3, H, W)`` cut along its long side to at most ``_MAX_ASPECT`` x its short
    side, centred (an image within that aspect is returned as it is)."""
    h, w = image.shape[-2:]
    short, long = min(h, w), max(h, w)
    if long <= _MAX_ASPECT * short:
        return image
    keep = math.ceil(_MAX_ASPECT * short)
    keep += (long - keep) % 2  # the same parity as ``long``: the window is exactly centred
    start = (long - keep) // 2
    return image[:, :, start : start + keep] if w > h else image[:, start : start + keep, :]


def _embed_folder(
    listed: _FolderImages,
    encoder: ImageEncoder,
    *,
    batch_size: int,
    device: torch.device,
    progress: bool,
) -> tuple[Tensor, list[str], list[str], int]:
    """Normalised embeddings ``(N, D)`` float64 of the readable images, their names, the
    SHA-256 of their bytes, and the number of files skipped."""
    from tqdm.auto import tqdm

    from rave.errors import describe_failure, is_rave_bug

    folder, label, files = listed.folder, listed.label, listed.files
    # "Every image of the folder" means the folder itself: a set kept in sub-folders (as
    # downloaded datasets often are) would otherwise be left out without a word.
    if listed.left_out:
        logger.warning("%s (only the images directly inside a folder are used)", listed.subfolders)
    # A FIFO or device named like a photo is not opened (reading one may block), but it is
    # said and counted, as an unreadable file is.
    for path in listed.not_regular:
        logger.warning("skipped %s: not a regular file", printable(path))
    embeddings: list[Tensor] = []
    names: list[str] = []
    digests: list[str] = []
    batch: list[Tensor] = []
    skipped = len(listed.not_regular)

    def flush() -> None:
        with torch.inference_mode():
            out = encoder.embed(torch.stack(batch).to(device), resize="center_crop")
        embeddings.append(out.double().cpu())
        batch.clear()

    for path in tqdm(files, desc=f"{label} images", unit="img", disable=not progress):
        try:
            image = _central_window(read_image(path))
            digest = _file_sha256(path)
            # Crop each image to the encoder's input on its own, so any size batches up.
            batch.append(center_crop_resize(image[None], encoder.input_size)[0])
        except Exception as err:  # one file's failure is that file's line (bugs excepted)
            if is_rave_bug(err):
                raise
            skipped += 1
            reason = err if isinstance(err, PhotoError) else f"{path}: {describe_failure(err)}"
            logger.warning("skipped %s", printable(reason))
            continue
        names.append(path.name)
        digests.append(digest)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if not names:
        raise ValueError(f"no readable images in {folder} ({len(files)} files, {skipped} skipped)")
    if len(names) == 1:
        logger.warning("only one image in %s: the %s mean is a weak estimate", folder, label)
    return torch.cat(embeddings), names, digests, skipped


def _file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks (a photo may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def residual_from_embeddings(
    backlit: Tensor, well_lit: Tensor
) -> tuple[Tensor, float, Tensor, Tensor]:
    """The residual vector of two sets of embeddings (the arithmetic of docs/method.md).

    Args:
        backlit: ``(N_b, D)`` per-image embeddings, unit norm.
        well_lit: ``(N_w, D)`` per-image embeddings, unit norm.

    Returns:
        ``(r, thr, v_w, v_b)``: ``r``, ``v_w``, ``v_b`` are ``(D,)`` unit vectors in the input's
        dtype; ``thr`` a float.

    Raises:
        ValueError: if the two mean directions coincide (``r`` undefined) or a mean is zero.
    """
    mean_b, mean_w = backlit.mean(dim=0), well_lit.mean(dim=0)
    if mean_b.norm() < 1e-8 or mean_w.norm() < 1e-8:
        raise ValueError("an image set's embeddings cancel out: its mean direction is undefined")
    v_b, v_w = mean_b / mean_b.norm(), mean_w / mean_w.norm()
    diff = v_w - v_b
    # float32 embeddings of the same images differ by ~1e-7: below this the sets are identical.
    if diff.norm() < 1e-6:
        raise ValueError(
            "the backlit and well-lit sets have the same mean embedding: the residual vector is "
            "undefined (are the two folders the same?)"
        )
    r = diff / diff.norm()
    return r, float(torch.dot(v_w, r)), v_w, v_b


def compute_residual(
    backlit_dir: str | Path,
    well_lit_dir: str | Path,
    encoder: ImageEncoder | str,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> ResidualVector:
    """Compute RAVE's residual vector from a folder of backlit and one of well-lit images.

    Every readable image directly inside each folder is used; files named like images
    that cannot be read are skipped with one warning each (and counted), files with other
    suffixes and hidden files are not looked at. Both folders are listed before either is
    embedded.

    Args:
        backlit_dir: folder of backlit images.
        well_lit_dir: folder of well-lit images.
        encoder: an encoder, or its name for :func:`rave.encoders.create_encoder`.
        batch_size: images per forward pass.
        device: where to run the encoder (an encoder object is moved there); by default
            where an encoder object already is (it is left as it was), the CPU for a name.
        progress: show a tqdm progress bar per folder.

    Returns:
        the :class:`ResidualVector`.

    Raises:
        FileNotFoundError: if a folder does not exist.
        ValueError: if a folder has no readable image, or both sets have the same mean.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if Path(backlit_dir).resolve() == Path(well_lit_dir).resolve():
        raise ValueError(
            f"the backlit and well-lit folders are the same ({backlit_dir}): the residual "
            "vector would be undefined"
        )
    # Both folders are listed first: a missing set is reported before any embedding (or a
    # download of the encoder's weights).
    listed_b = _list_folder(Path(backlit_dir), "backlit")
    listed_w = _list_folder(Path(well_lit_dir), "well-lit")
    if isinstance(encoder, str):
        from rave.encoders import create_encoder

        device = torch.device(device or "cpu")
        encoder = create_encoder(encoder, device=device)
    elif device is None:
        # The caller's encoder stays where it is: moving a CUDA encoder to a default CPU
        # would slow this down and leave the caller's model somewhere it did not put it.
        weight = next(encoder.parameters(), None)
        device = weight.device if weight is not None else torch.device("cpu")
    else:
        device = torch.device(device)
        encoder = encoder.to(device)
    options: dict[str, Any] = {"batch_size": batch_size, "device": device, "progress": progress}
    backlit, names_b, digests_b, skipped_b = _embed_folder(listed_b, encoder, **options)
    well_lit, names_w, digests_w, skipped_w = _embed_folder(listed_w, encoder, **options)
    r, thr, v_w, v_b = residual_from_embeddings(backlit, well_lit)
    listing = sorted([f"backlit/{n}" for n in names_b] + [f"well_lit/{n}" for n in names_w])
    contents = sorted(
        [f"backlit/{n} {d}" for n, d in zip(names_b, digests_b, strict=True)]
        + [f"well_lit/{n} {d}" for n, d in zip(names_w, digests_w, strict=True)]
    )
    return ResidualVector(
        residual=r.float(),
        threshold=thr,
        mean_well_lit=v_w.float(),
        mean_backlit=v_b.float(),
        encoder=encoder.name,
        encoder_sha256=encoder.weights_sha256(),
        num_backlit=len(names_b),
        num_well_lit=len(names_w),
        num_skipped=skipped_b + skipped_w,
        files_sha256=hashlib.sha256("\n".join(listing).encode()).hexdigest(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        data_sha256=hashlib.sha256("\n".join(contents).encode()).hexdigest(),
        # embeddings are unit rows: e_i . r is the cosine the guidance loss compares to thr
        projections=tuple(
            [(f"backlit/{n}", float(c)) for n, c in zip(names_b, backlit @ r, strict=True)]
            + [(f"well_lit/{n}", float(c)) for n, c in zip(names_w, well_lit @ r, strict=True)]
        ),
    )


def save_residual(rv: ResidualVector, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``rv`` atomically (temporary file in the target folder, then rename).

    Args:
        rv: the residual vector.
        path: output file (conventionally ``*.pt``); missing folders are created.
        overwrite: replace an existing file (otherwise ``FileExistsError``, also when the
            file appears while this one is written).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "residual": rv.residual.detach().float().cpu().contiguous(),
        "threshold": float(rv.threshold),
        "mean_well_lit": rv.mean_well_lit.detach().float().cpu().contiguous(),
        "mean_backlit": rv.mean_backlit.detach().float().cpu().contiguous(),
        "encoder": rv.encoder,
        "num_backlit": int(rv.num_backlit),
        "num_well_lit": int(rv.num_well_lit),
        "num_skipped": int(rv.num_skipped),
        "files_sha256": rv.files_sha256,
        "created": rv.created,
        # Optional keys (version 1 files may lack them; older readers ignore them).
        "data_sha256": rv.data_sha256,
        "derivation": rv.derivation,
        "encoder_sha256": rv.encoder_sha256,
    }
    atomic_write(
        path,
        lambda stream: torch.save(payload, stream),
        verify=None if overwrite else keep_existing(path),
    )
    return path


def keep_existing(path: Path) -> Callable[[Path], None]:
    """A ``verify`` for :func:`rave.io.atomic_write` that refuses to replace ``path``.

    Checked once the new file is complete, just before the rename: a file that appeared at
    ``path`` while it was being computed (another run writing the same name) is kept, where
    a check made only before the work would let the rename replace it.
    """

    def verify(_temporary: Path) -> None:
        if path.exists() or path.is_symlink():
            raise FileExistsError(
                f"{path} was created meanwhile; it is kept (pass overwrite=True to replace it)"
            )

    return verify


def _unit_vector(payload: dict[str, Any], key: str, path: Path, dim: int | None) -> Tensor:
    value = payload.get(key)
    if not isinstance(value, Tensor) or value.ndim != 1 or not value.is_floating_point():
        raise ValueError(f"{path}: '{key}' must be a 1-D float tensor")
    if dim is not None and value.numel() != dim:
        raise ValueError(f"{path}: '{key}' has {value.numel()} values, 'residual' has {dim}")
    norm = float(value.double().norm())
    if not math.isfinite(norm) or abs(norm - 1.0) > _UNIT_TOL:
        raise ValueError(f"{path}: '{key}' is not a unit vector (norm {norm:.6g})")
    return value.float()


def load_residual(path: str | Path) -> ResidualVector:
    """Read and validate a file written by :func:`save_residual` (``weights_only=True``).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: naming the file and the problem, if it is not a valid residual file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"residual file not found: {path}")
    from rave.network.checkpoint import CheckpointError, load_torch_payload

    try:
        payload = load_torch_payload(path)
    except CheckpointError as err:
        raise ValueError(f"not a readable residual file: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a rave residual file (no format={FORMAT!r} entry)")
    if payload.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: residual file version {payload.get('version')!r} unsupported")
    residual = _unit_vector(payload, "residual", path, None)
    mean_w = _unit_vector(payload, "mean_well_lit", path, residual.numel())
    mean_b = _unit_vector(payload, "mean_backlit", path, residual.numel())
    threshold = payload.get("threshold")
    if not isinstance(threshold, float) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"{path}: 'threshold' must be a float in [-1, 1], got {threshold!r}")
    fields: dict[str, Any] = {}
    for key, kind in (
        ("encoder", str),
        ("num_backlit", int),
        ("num_well_lit", int),
        ("num_skipped", int),
        ("files_sha256", str),
        ("created", str),
    ):
        if not isinstance(payload.get(key), kind):
            raise ValueError(f"{path}: '{key}' missing or not a {kind.__name__}")
        fields[key] = payload[key]
    for key in ("data_sha256", "derivation", "encoder_sha256"):  # absent from older files
        value = payload.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"{path}: '{key}' is not a str")
        fields[key] = value
    return ResidualVector(
        residual=residual, threshold=threshold, mean_well_lit=mean_w, mean_backlit=mean_b, **fields
    )


def check_encoder(rv: ResidualVector, encoder: str | ImageEncoder) -> None:
    """Raise ``ValueError`` unless ``rv`` was computed with ``encoder`` (a name or an encoder).

    ``clip:ARCH`` and ``clip:ARCH@openai`` name the same encoder. Given an encoder object and
    a file that records its encoder's weights (``encoder_sha256``), the weights decide: the
    same weights under another name (a tag's file saved locally, a path spelled otherwise)
    are accepted, other weights under the same name refused.
    """
    from rave.encoders import canonical_name

    name = encoder if isinstance(encoder, str) else encoder.name
    if not isinstance(encoder, str) and rv.encoder_sha256:
        weights = encoder.weights_sha256()
        if weights != rv.encoder_sha256:
            raise ValueError(
                f"the residual vector was computed with other weights than those of the "
                f"guidance encoder {name!r} (sha256 {rv.encoder_sha256[:12]}..., these are "
                f"{weights[:12]}...): recompute it with `rave residual --encoder {name}`"
            )
    elif canonical_name(rv.encoder) != canonical_name(name):
        raise ValueError(
            f"the residual vector was computed with encoder {rv.encoder!r} but the guidance "
            f"encoder is {name!r}: recompute it with `rave residual --encoder {name}`"
        )
    dim = getattr(encoder, "embed_dim", None)
    if dim is not None and dim != rv.residual.numel():
        raise ValueError(
            f"the residual vector has {rv.residual.numel()} dimensions, encoder {name!r} "
            f"embeds into {dim}"
        )


@dataclass(frozen=True)
class SetProjections:
    """The projections ``cos(e_i, r)`` of one set's images (from ``ResidualVector.projections``).

    Attributes:
        names: image names (``backlit/<name>``...), in the order computed.
        values: their projections, same order.
    """

    names: list[str]
    values: list[float]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


def split_projections(rv: ResidualVector) -> tuple[SetProjections, SetProjections]:
    """``(backlit, well-lit)`` projections of ``rv``.

    Raises:
        ValueError: ``rv`` carries none (loaded from a file, or shifted).
    """
    sets = {"backlit": SetProjections([], []), "well_lit": SetProjections([], [])}
    for name, value in rv.projections:
        part = sets[name.split("/", 1)[0]]
        part.names.append(name)
        part.values.append(value)
    if not sets["backlit"].values or not sets["well_lit"].values:
        raise ValueError("no per-image projections: they exist only right after computing r")
    return sets["backlit"], sets["well_lit"]


def crossing_images(rv: ResidualVector) -> tuple[list[str], list[str]]:
    """Images on the other set's side of the midpoint between the two sets' mean projections.

    A backlit image that projects beyond the midpoint looks, along ``r``, like the well-lit
    set (and the other way round): an atypical or mislabelled image worth a look.

    Returns:
        ``(backlit names, well-lit names)``, each most crossing first.
    """
    backlit, well_lit = split_projections(rv)
    middle = (backlit.mean + well_lit.mean) / 2
    high = sorted((-v, n) for n, v in zip(backlit.names, backlit.values, strict=True) if v > middle)
    low = sorted((v, n) for n, v in zip(well_lit.names, well_lit.values, strict=True) if v < middle)
    return [n for _, n in high], [n for _, n in low]


def plot_projections(
    rv: ResidualVector, path: str | Path, *, title: str = "", overwrite: bool = False
) -> None:
    """Draw both sets' projections ``cos(e_i, r)`` as histograms in one PNG (atomically).

    Marks each set's mean and ``thr = v_w . r``, the value the guidance loss pulls an
    enhanced image's projection to (above the well-lit images' own mean projection, since
    ``v_w`` is their normalised mean).

    Raises:
        ValueError: ``rv`` carries no projections.
        FileExistsError: ``path`` exists (or appeared while drawing) and not ``overwrite``.
    """
    save_figure(path, lambda: _projection_figure(rv, title), overwrite=overwrite)


def save_figure(path: str | Path, draw: Callable[[], Any], *, overwrite: bool = False) -> None:
    """Write the matplotlib figure ``draw()`` makes as a PNG at ``path``, atomically.

    An existing ``path`` is refused before drawing and again just before the rename (a
    file that appeared meanwhile is kept), unless ``overwrite``; the figure is closed
    whatever happens. The one way the guidance tools save their charts.

    Raises:
        FileExistsError: ``path`` exists (or appeared while drawing) and not ``overwrite``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True (--overwrite) to replace it")
    fig = draw()
    try:
        atomic_write(
            path,
            lambda stream: fig.savefig(stream, format="png", dpi=120),
            verify=None if overwrite else keep_existing(path),
        )
    finally:
        plt.close(fig)


def _projection_figure(rv: ResidualVector, title: str) -> Any:
    """The figure of :func:`plot_projections`."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    backlit, well_lit = split_projections(rv)
    values = backlit.values + well_lit.values + [rv.threshold]
    low, high = min(values), max(values)
    pad = 0.05 * (high - low) or 0.01
    step = (high - low + 2 * pad) / 30
    bins = [low - pad + i * step for i in range(31)]
    fig, axis = plt.subplots(figsize=(10, 4), constrained_layout=True)
    for part, label, colour in (
        (backlit, "backlit", "tab:blue"),
        (well_lit, "well-lit", "tab:orange"),
    ):
        axis.hist(part.values, bins=bins, alpha=0.6, color=colour,
                  label=f"{label} ({len(part.values)} images)")  # fmt: skip
        axis.axvline(part.mean, color=colour, linestyle="--", linewidth=1,
                     label=f"{label} mean {part.mean:.3f}")  # fmt: skip
    axis.axvline(rv.threshold, color="black", linewidth=1.5,
                 label=f"thr = v_w . r = {rv.threshold:.3f} (loss target)")  # fmt: skip
    axis.set_xlabel("projection on the residual vector, cos(e_i, r)")
    axis.set_ylabel("images")
    axis.yaxis.set_major_locator(MaxNLocator(integer=True))  # image counts
    # beside the axes: inside, it hid bars wherever it went
    axis.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    axis.set_title(title or f"{rv.encoder}: the two sets along r", parse_math=False)
    return fig
