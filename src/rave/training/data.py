"""Training data: image folders, the paper's augmentations, and a resumable batch order.

Determinism: which image lands in which batch, and how it is augmented, is a pure function
of ``(seed, iteration, rank)``. Nothing depends on a global RNG or on worker scheduling, so a
run resumed at any iteration sees exactly the batches an uninterrupted run would, with any
``num_workers``.

Batch order: the images are shuffled by a permutation drawn per epoch from ``(seed, epoch)``;
sample ``p`` of the run (counting over all ranks) is image ``perm_{p // n}[p % n]``. Rank
``k`` of ``W`` takes samples ``[i * W * B + k * B, i * W * B + (k + 1) * B)`` at iteration
``i``, which shards every epoch across ranks as DistributedSampler does.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler

from rave.io.printable import printable
from rave.io.views import unit_float

__all__ = [
    "AugmentParams",
    "FolderImages",
    "ResumableBatchSampler",
    "TrainingImages",
    "augment",
    "batch_keys",
    "list_images",
    "load_image",
    "pair_by_stem",
]

log = logging.getLogger(__name__)


def list_images(folder: str | Path) -> list[Path]:
    """Image files of ``folder`` (not recursive), sorted: :func:`rave.io.list_image_files`.

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it holds no image files.
    """
    from rave.io.formats import IMAGE_SUFFIXES, list_image_files

    files = list_image_files(folder)
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def pair_by_stem(
    backlit: Sequence[Path], well_lit: Sequence[Path]
) -> tuple[list[Path], list[Path]]:
    """Backlit images and their ground truth, matched by file stem (paired regime).

    Unmatched files are left out with a warning.

    Returns:
        two lists of equal length, partners at the same index.

    Raises:
        ValueError: no stem is shared by the two lists.
    """
    by_stem = {p.stem: p for p in well_lit}
    pairs = [(b, by_stem[b.stem]) for b in backlit if b.stem in by_stem]
    if not pairs:
        raise ValueError("paired regime: no backlit image has a well-lit file with the same stem")
    unmatched = len(backlit) - len(pairs)
    if unmatched or len(well_lit) > len(pairs):
        log.warning(
            "paired regime: %d backlit and %d well-lit images have no partner and are left out",
            unmatched,
            len(well_lit) - len(pairs),
        )
    return [b for b, _ in pairs], [w for _, w in pairs]


def load_image(path: Path, size: int, *, keep_scale: bool = False) -> Tensor:
    """An image resized to ``size x size`` (aspect not kept, as the paper trains).

    Decoded by :func:`rave.io.read_photo` (the one reader: EXIF orientation, 16 bits kept,
    grey replicated to RGB, alpha dropped). Pillow's Lanczos filter is the reference
    code's ``ANTIALIAS``; 16-bit photos are resized per channel in float (Pillow holds
    16-bit colour only as 8 bits) and rounded back to 16 bits.

    Args:
        path: the image file.
        size: the side of the square (or, with ``keep_scale``, the least side).
        keep_scale: keep the photo's own resolution and aspect, for random crops of
            ``size x size``; only a photo with a side under ``size`` is enlarged (aspect
            kept) so that its shorter side is ``size``.

    Returns:
        ``(3, size, size)`` (``keep_scale``: ``(3, H, W)``, ``min(H, W) >= size``) uint8 for
        8-bit files, uint16 for 16-bit ones; :func:`rave.io.views.unit_float` gives float32
        in [0, 1].

    Raises:
        ValueError: the file is not a readable image (one line naming the file).
    """
    from rave.io import PhotoError, read_photo
    from rave.io.views import rgb_samples

    try:
        rgb = rgb_samples(read_photo(path).pixels)
    except PhotoError as err:
        raise ValueError(str(err)) from None
    height, width = rgb.shape[:2]
    if not keep_scale:
        target = (size, size)
    elif min(height, width) >= size:
        target = (width, height)
    else:
        enlarge = size / min(height, width)
        target = (max(size, round(width * enlarge)), max(size, round(height * enlarge)))
    if target == (width, height):
        resized = rgb
    elif rgb.dtype == np.uint8:
        resized = np.asarray(Image.fromarray(rgb).resize(target, Image.Resampling.LANCZOS))
    else:
        channels = [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(rgb[:, :, c], dtype=np.float32), "F").resize(
                    target, Image.Resampling.LANCZOS
                )
            )
            for c in range(3)
        ]
        resized = np.clip(np.rint(np.dstack(channels)), 0, 65535).astype(np.uint16)
    return torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous()  # writable copy


class FolderImages:
    """A list of image files as ``size x size`` samples; unreadable files are skipped with a
    warning.

    Args:
        files: the image files.
        size: side of the square samples.
        cache: decode every image once and keep it (uint8); otherwise decode on access.
        crop: how a photo becomes a square: False squashes the whole photo to ``size`` (the
            paper); True takes a ``size x size`` window of the photo at its own resolution
            (:func:`load_image` with ``keep_scale``), at a random place per sample.

    Attributes:
        files: the readable files, in order.
    """

    def __init__(
        self, files: Sequence[Path], size: int, cache: bool = True, crop: bool = False
    ) -> None:
        self.size = size
        self.crop = crop
        self._cache: list[Tensor] | None = [] if cache else None
        kept: list[Path] = []
        for path in files:
            try:
                # Decoded in full either way: a truncated file is found now, not mid-run.
                image = load_image(path, size, keep_scale=crop)
                if self._cache is not None:
                    self._cache.append(image)
            except (ValueError, OSError, UnidentifiedImageError) as err:
                reason = err if isinstance(err, ValueError) else f"{path}: {err}"
                log.warning("skipping %s", printable(reason))
                continue
            kept.append(Path(path))
        if not kept:
            raise ValueError(f"none of the {len(files)} image files could be read")
        self.files = kept

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int, generator: torch.Generator | None = None) -> Tensor:
        """Image ``index`` as ``(3, size, size)`` float32 in [0, 1].

        Args:
            index: which image.
            generator: with ``crop``, draws the window's place (uniform over the photo);
                None takes the central window. Unused without ``crop``.
        """
        image = (
            self._cache[index]
            if self._cache is not None
            else load_image(self.files[index], self.size, keep_scale=self.crop)
        )
        if self.crop:
            image = _window(image, self.size, generator)
        return unit_float(image)


def _window(image: Tensor, size: int, generator: torch.Generator | None) -> Tensor:
    """A ``size x size`` window of ``(C, H, W)`` ``image``: random with ``generator``, else
    central."""
    spare_y, spare_x = image.shape[-2] - size, image.shape[-1] - size
    if generator is None:
        top, left = spare_y // 2, spare_x // 2
    else:
        top, left = (
            int(torch.randint(spare + 1, (), generator=generator)) for spare in (spare_y, spare_x)
        )
    return image[:, top : top + size, left : left + size]


@dataclass(frozen=True)
class AugmentParams:
    """The paper's augmentations; each applies independently with its probability.

    The one definition of these settings: :class:`rave.training.config.TrainConfig` inherits
    them, so they are also top-level config keys (``zoom_range: [0.8, 1.2]``).
    """

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    transpose_p: float = 0.5
    zoom_p: float = 0.3
    zoom_range: tuple[float, float] = (0.7, 1.3)
    rotate_p: float = 0.3
    rotate_degrees: float = 90.0
    # separate zoom factors for x and y, each from zoom_range, as the authors' code draws them
    # (aspect zx/zy from 0.66 to 1.52 between the 5th and 95th percentile); false: one factor
    zoom_per_axis: bool = True

    @classmethod
    def of(cls, settings: object) -> AugmentParams:
        """The augmentation settings of ``settings`` (e.g. a training config), as this class."""
        import dataclasses

        return cls(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(cls)})


def augment(image: Tensor, generator: torch.Generator, params: AugmentParams) -> Tensor:
    """Random flips, transpose, zoom and rotation (reflect border) of one square image.

    Every random number is drawn, whether or not its augmentation applies, so the draws of
    one augmentation never shift those of another. The zoom scales x by ``zx`` and y by
    ``zy`` (``zy = zx`` unless ``params.zoom_per_axis``), then the rotation turns the result,
    in one resampling.

    Args:
        image: ``(3, S, S)`` float in [0, 1].
        generator: the sample's own generator.
        params: probabilities and ranges.

    Returns:
        ``(3, S, S)`` float in [0, 1].
    """
    u = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
    if u[0] < params.hflip_p:
        image = image.flip(-1)
    if u[1] < params.vflip_p:
        image = image.flip(-2)
    if u[2] < params.transpose_p:
        image = image.transpose(-1, -2)
    zoom_x = zoom_y = 1.0
    if u[3] < params.zoom_p:
        low, high = params.zoom_range
        zoom_x = low + (high - low) * u[4]
        zoom_y = low + (high - low) * u[7] if params.zoom_per_axis else zoom_x
    angle = 0.0
    if u[5] < params.rotate_p:
        angle = math.radians((2.0 * u[6] - 1.0) * params.rotate_degrees)
    if zoom_x == zoom_y == 1.0 and angle == 0.0:
        return image.contiguous()
    # One resampling for zoom and rotation together: theta maps output to input coordinates
    # (inverse zoom after inverse rotation), so a zoom > 1 magnifies (a smaller input region).
    cos, sin = math.cos(angle), math.sin(angle)
    theta = torch.tensor(
        [[[cos / zoom_x, -sin / zoom_x, 0.0], [sin / zoom_y, cos / zoom_y, 0.0]]],
        dtype=image.dtype,
    )
    grid = F.affine_grid(theta, [1, *image.shape], align_corners=False)
    out = F.grid_sample(
        image.unsqueeze(0), grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )
    return out.squeeze(0).clamp_(0.0, 1.0)


def _seed_of(*words: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence hashes them well)."""
    return int(np.random.SeedSequence([int(w) for w in words]).generate_state(2, np.uint64)[0] >> 1)


@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    generator = torch.Generator().manual_seed(_seed_of(seed, epoch, 0x5EED))
    return tuple(torch.randperm(n, generator=generator).tolist())


def batch_keys(
    n: int, batch_size: int, seed: int, iteration: int, rank: int = 0, world_size: int = 1
) -> list[tuple[int, int]]:
    """``(image index, augmentation seed)`` of each sample of one rank's batch.

    Args:
        n: number of images.
        batch_size: per-rank batch size.
        seed: the run's seed.
        iteration: 0-based iteration.
        rank, world_size: this process's place among ``world_size`` processes.
    """
    keys = []
    for j in range(batch_size):
        position = (iteration * world_size + rank) * batch_size + j
        epoch, offset = divmod(position, n)
        keys.append((_epoch_permutation(n, seed, epoch)[offset], _seed_of(seed, position, 0xA06)))
    return keys


class ResumableBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of :func:`batch_keys` for iterations ``start, start + 1, ..., stop - 1``."""

    def __init__(
        self,
        n: int,
        batch_size: int,
        seed: int,
        start: int,
        stop: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for iteration in range(self.start, self.stop):
            yield batch_keys(
                self.n, self.batch_size, self.seed, iteration, self.rank, self.world_size
            )


class TrainingImages(Dataset):
    """Augmented training samples, indexed by ``(image index, augmentation seed)`` keys.

    Args:
        images: the decoded image folder.
        params: augmentation settings; None disables augmentation.
    """

    def __init__(self, images: FolderImages, params: AugmentParams | None) -> None:
        self.images = images
        self.params = params

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: tuple[int, int]) -> Tensor:
        index, sample_seed = key
        # the window's own generator: the augmentation draws stay those of the squash mode
        window = torch.Generator().manual_seed(_seed_of(sample_seed, 0xC409))
        image = self.images.get(index, window)
        if self.params is None:
            return image
        return augment(image, torch.Generator().manual_seed(sample_seed), self.params)
