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
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, Sampler

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


def load_image(path: Path, size: int) -> Tensor:
    """An image resized to ``size x size`` (aspect not kept, as the paper trains).

    Pillow's Lanczos filter is the reference code's ``ANTIALIAS``. EXIF orientation is
    applied; 16-bit and grey images are converted to 8-bit RGB.

    Returns:
        ``(3, size, size)`` uint8.

    Raises:
        ValueError: the file is not a readable image (message names the file).
    """
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # Pillow cannot convert 16-bit grey to RGB directly: scale to 8 bits first.
                arr = np.asarray(img, dtype=np.float64)
                img = Image.fromarray(np.clip(arr / 257.0, 0, 255).astype(np.uint8))
            img = img.convert("RGB").resize((size, size), Image.Resampling.LANCZOS)
            array = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise ValueError(f"{path}: cannot read image ({err})") from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


class FolderImages:
    """A list of image files, resized to ``size``; unreadable files are skipped with a warning.

    Args:
        files: the image files.
        size: side of the square each image is resized to.
        cache: decode every image once and keep it (uint8); otherwise decode on access.

    Attributes:
        files: the readable files, in order.
    """

    def __init__(self, files: Sequence[Path], size: int, cache: bool = True) -> None:
        self.size = size
        self._cache: list[Tensor] | None = [] if cache else None
        kept: list[Path] = []
        for path in files:
            try:
                if self._cache is not None:
                    self._cache.append(load_image(path, size))
                else:
                    with Image.open(path) as img:
                        img.verify()
            except (ValueError, OSError, UnidentifiedImageError) as err:
                log.warning("skipping %s", err if isinstance(err, ValueError) else f"{path}: {err}")
                continue
            kept.append(Path(path))
        if not kept:
            raise ValueError(f"none of the {len(files)} image files could be read")
        self.files = kept

    def __len__(self) -> int:
        return len(self.files)

    def get(self, index: int) -> Tensor:
        """Image ``index`` as ``(3, size, size)`` float32 in [0, 1]."""
        image = (
            self._cache[index]
            if self._cache is not None
            else load_image(self.files[index], self.size)
        )
        return image.float().div_(255.0)


@dataclass(frozen=True)
class AugmentParams:
    """The paper's augmentations; each applies independently with its probability."""

    hflip_p: float = 0.5
    vflip_p: float = 0.5
    transpose_p: float = 0.5
    zoom_p: float = 0.3
    zoom_range: tuple[float, float] = (0.7, 1.3)
    rotate_p: float = 0.3
    rotate_degrees: float = 90.0


def augment(image: Tensor, generator: torch.Generator, params: AugmentParams) -> Tensor:
    """Random flips, transpose, zoom and rotation (reflect border) of one square image.

    Every random number is drawn, whether or not its augmentation applies, so the draws of
    one augmentation never shift those of another.

    Args:
        image: ``(3, S, S)`` float in [0, 1].
        generator: the sample's own generator.
        params: probabilities and ranges.

    Returns:
        ``(3, S, S)`` float in [0, 1].
    """
    u = torch.rand(7, generator=generator, dtype=torch.float64).tolist()
    if u[0] < params.hflip_p:
        image = image.flip(-1)
    if u[1] < params.vflip_p:
        image = image.flip(-2)
    if u[2] < params.transpose_p:
        image = image.transpose(-1, -2)
    zoom = 1.0
    if u[3] < params.zoom_p:
        low, high = params.zoom_range
        zoom = low + (high - low) * u[4]
    angle = 0.0
    if u[5] < params.rotate_p:
        angle = math.radians((2.0 * u[6] - 1.0) * params.rotate_degrees)
    if zoom == 1.0 and angle == 0.0:
        return image.contiguous()
    # One resampling for zoom and rotation together: theta maps output to input coordinates,
    # so a zoom > 1 magnifies (samples a smaller input region).
    cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
    theta = torch.tensor([[[cos, -sin, 0.0], [sin, cos, 0.0]]], dtype=image.dtype)
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
        image = self.images.get(index)
        if self.params is None:
            return image
        return augment(image, torch.Generator().manual_seed(sample_seed), self.params)
