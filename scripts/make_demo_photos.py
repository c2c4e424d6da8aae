"""Make the README's example backlit photos at run time from package-shipped photos.

The project ships no photos of its own: this script darkens well-lit, freely licensed photos
that scikit-image and matplotlib install (public domain or CC0, see ``DEMO_PHOTOS``) into a
plausible backlit look (bright background, subject in shadow) with
:func:`make_default_dataset.synthesize_backlit`, and writes them as PNG into a folder::

    python scripts/make_demo_photos.py examples/
    rave enhance examples/ -o examples/enhanced
    python scripts/before_after.py examples/ examples/enhanced -o examples/before_after.png

The output is deterministic (fixed seed and parameters).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_default_dataset import (
    WellLitSource,
    backlight_mask,
    load_well_lit,
    save_png_atomic,
    synthesize_backlit,
)

# Only photos the project may redistribute without conditions (public domain / CC0).
DEMO_PHOTOS: tuple[WellLitSource, ...] = (
    WellLitSource("astronaut", "scikit-image", "skimage:astronaut", "public domain (NASA)"),
    WellLitSource("chelsea", "scikit-image", "skimage:chelsea", "CC0 (Stefan van der Walt)"),
    WellLitSource("coffee", "scikit-image", "skimage:coffee", "CC0 (Rachel Michetti)"),
    WellLitSource("grace_hopper", "matplotlib", "matplotlib:grace_hopper.jpg",
                  "public domain (US Navy photo)"),
)  # fmt: skip


def make_demo_photo(image: np.ndarray, seed: int) -> np.ndarray:
    """A strongly backlit version of a well-lit photo.

    Args:
        image: ``(H, W, 3)`` float RGB in [0, 1].
        seed: seed of the noise.

    Returns:
        ``(H, W, 3)`` float32 RGB in [0, 1].
    """
    # Firmer than the training variants: the README should show an obvious problem.
    mask = backlight_mask(image, sky_weight=0.5, subject_weight=0.9)
    return synthesize_backlit(
        image, np.random.default_rng(seed), mask=mask, shadow_gain=0.05, light_gain=1.8,
        noise=4e-4,
    )  # fmt: skip


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the example photos into")
    parser.add_argument("--overwrite", action="store_true", help="replace existing photos")
    args = parser.parse_args(list(argv) if argv is not None else None)

    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    for seed, src in enumerate(DEMO_PHOTOS):
        path = args.out / f"{src.name}.png"
        if path.exists() and not args.overwrite:
            print(f"{path}: exists, kept (pass --overwrite to replace)")
            written += 1
            continue
        try:
            rgb = np.asarray(load_well_lit(src), dtype=np.float32) / 255.0
        except (ImportError, OSError) as err:  # FileNotFoundError is an OSError
            print(f"{src.name} ({src.source}): skipped: {err}", file=sys.stderr)
            continue
        out = make_demo_photo(rgb, seed)
        save_png_atomic(Image.fromarray((out * 255 + 0.5).astype(np.uint8)), path)
        print(f"{path}: from {src.source} {src.locator.split(':')[-1]} ({src.licence})")
        written += 1
    if not written:
        print("error: no example photo could be made", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
