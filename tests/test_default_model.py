"""The built-in ``default`` model: shipped in the package, loads offline, lifts shadows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import rave
from rave.metrics import shadow_lift
from rave.network import EnhancementNet, count_parameters
from rave.zoo import builtin_weights_path


def test_default_weights_ship_inside_the_package() -> None:
    path = builtin_weights_path()
    assert path is not None, "src/rave/zoo/weights/default.safetensors is missing"
    assert 1_000_000 < path.stat().st_size < 1_300_000  # 278,790 float32 + header


def test_default_loads_by_name_offline() -> None:
    # conftest sets RAVE_OFFLINE=1 and an empty cache: nothing may be fetched.
    net = rave.load_enhancer("default")
    assert isinstance(net, EnhancementNet)
    assert count_parameters(net) == 278_790
    assert not net.training and net.padding_mode == "reflect"


def _real_backlit_photo(photos_dir: Path) -> np.ndarray:
    # A held-out photo of scripts/make_default_dataset.py: never trained on.
    with Image.open(photos_dir / "dicm" / "05.jpg") as image:
        return np.asarray(image.convert("RGB"))


def test_default_lifts_shadows_and_keeps_highlights(photos_dir: Path) -> None:
    photo = _real_backlit_photo(photos_dir)
    enhanced = rave.enhance(photo)  # model="default"
    assert enhanced.shape == photo.shape and enhanced.dtype == np.uint8
    lift = shadow_lift(photo, enhanced)
    # Brighter shadows, its darkest pixels too (the shipped model lifts this photo's darkest
    # half by about 0.05 and rave-unpaired by about as much on average: see the model card).
    assert lift.mean_lift > 0.025
    assert lift.p10_lift > 0.005
    # Highlights kept: no new clipped pixel (the model's highlight guard: outputs rise above
    # 0.9 only where the input already was; this photo's sky is already 20% clipped), and
    # the brightest tenth barely moves.
    assert lift.clipped_after <= lift.clipped_before
    luma = photo.astype(np.float64) @ [0.2126, 0.7152, 0.0722] / 255
    bright = luma >= np.percentile(luma, 90)
    change = np.abs(enhanced.astype(np.float64) - photo.astype(np.float64)) / 255
    assert change[bright].mean() < 0.08


@pytest.mark.parametrize("kind", ["pil", "float"])
def test_default_enhances_other_image_kinds(photos_dir: Path, kind: str) -> None:
    photo = _real_backlit_photo(photos_dir)[::4, ::4]
    image = Image.fromarray(photo) if kind == "pil" else photo.astype(np.float32) / 255
    enhanced = rave.enhance(image)
    as_array = np.asarray(enhanced, dtype=np.float64)
    as_array = as_array / 255 if kind == "pil" else as_array
    assert as_array.mean() > photo.mean() / 255  # brighter overall


# Held-out photos of scripts/make_default_dataset.py (HELDOUT_DICM, HELDOUT_LIME), never
# trained on nor used to choose the model; the ones whose shadows either model lifts visibly.
HELDOUT_PHOTOS = (
    "dicm/05.jpg", "dicm/31.jpg", "dicm/39.jpg", "dicm/47.jpg", "dicm/56.jpg", "dicm/61.jpg",
    "lime/7.bmp",
)  # fmt: skip


def test_default_beats_rave_unpaired_on_shadows_and_highlights(
    photos_dir: Path, net: EnhancementNet
) -> None:
    """Issue 12's figures on real held-out photos at full resolution, with wide margins.

    On these seven photos the shipped model lifts the darkest half 1.9 times as much as the
    authors' rave-unpaired and the darkest tenth 2.2 times (docs/model_card.md); the test asks
    for 1.3. Clipping: no photo may clip more than it did (an exact property of the model's
    highlight guard, not a measured margin), and the set clips less than rave-unpaired
    leaves (measured 0.46 against 0.67 summed shares).
    """
    ours, reference = [], []
    for name in HELDOUT_PHOTOS:
        with Image.open(photos_dir / name) as image:
            photo = np.asarray(image.convert("RGB"))
        mine = shadow_lift(photo, rave.enhance(photo))
        assert mine.clipped_after <= mine.clipped_before, name
        ours.append(mine)
        reference.append(shadow_lift(photo, rave.enhance(photo, model=net)))

    def mean(figures: list, field: str) -> float:
        return float(np.mean([getattr(f, field) for f in figures]))

    assert mean(ours, "mean_lift") >= 1.3 * mean(reference, "mean_lift")
    assert mean(ours, "p10_lift") >= 1.3 * mean(reference, "p10_lift")
    assert mean(ours, "clipped_after") <= mean(reference, "clipped_after")
