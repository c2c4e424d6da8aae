"""One image reader: evaluation, ``rave residual`` and training see a photo the same way.

Before, training decoded through Pillow and turned 16-bit photos into 8-bit, so
``rave train`` and ``rave residual`` saw one folder differently. The reference here is
OpenCV's own decoder (an independent implementation), divided by 65535.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from rave.evaluation.imread import read_image as evaluation_read_image
from rave.guidance.residual import read_image as residual_read_image
from rave.io.views import read_tensor, unit_float
from rave.training.data import FolderImages, load_image

SIDE = 32


def _deep_png(path: Path, grey: bool = False) -> np.ndarray:
    """A 16-bit photo whose values are not multiples of 257 (8 bits cannot hold them)."""
    rng = np.random.default_rng(3)
    shape = (SIDE, SIDE) if grey else (SIDE, SIDE, 3)
    pixels = rng.integers(1000, 64000, shape, dtype=np.uint16)
    assert cv2.imwrite(str(path), pixels if grey else pixels[:, :, ::-1])
    return pixels


def _reference(path: Path) -> torch.Tensor:
    decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if decoded.ndim == 2:
        decoded = np.repeat(decoded[:, :, None], 3, axis=2)
    else:
        decoded = decoded[:, :, ::-1]
    return torch.from_numpy(decoded.astype(np.float32) / np.float32(65535)).permute(2, 0, 1)


@pytest.mark.parametrize("grey", [False, True])
def test_16_bit_photo_gives_the_same_tensor_through_every_path(tmp_path: Path, grey: bool) -> None:
    path = tmp_path / "deep.png"
    _deep_png(path, grey)
    reference = _reference(path)
    assert not torch.equal(reference, torch.round(reference * 255) / 255)  # not 8-bit values
    paths = {
        "rave.io": read_tensor(path),
        "evaluation": torch.from_numpy(evaluation_read_image(path).pixels).permute(2, 0, 1),
        "residual": residual_read_image(path),
        "training": unit_float(load_image(path, SIDE)),  # same size: no resampling
        "training cache": FolderImages([path], SIDE, cache=True).get(0),
        "training lazy": FolderImages([path], SIDE, cache=False).get(0),
        "training crop": FolderImages([path], SIDE, crop=True).get(0, torch.Generator()),
    }
    for name, tensor in paths.items():
        assert tensor.dtype == torch.float32 and tensor.shape == (3, SIDE, SIDE), name
        assert torch.equal(tensor, reference), name


def test_training_resize_keeps_16_bits(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    _deep_png(path)
    resized = load_image(path, SIDE // 2)
    assert resized.dtype == torch.uint16 and resized.shape == (3, SIDE // 2, SIDE // 2)
    as_int = resized.to(torch.int32)
    assert bool((as_int % 257 != 0).any())  # values between the 8-bit levels survive
    # Lanczos of a noisy image stays near the mean of the area it covers.
    reference = _reference(path)
    pooled = torch.nn.functional.avg_pool2d(reference[None], 2)[0]
    assert float((unit_float(resized) - pooled).abs().mean()) < 0.2


def test_training_reader_names_a_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match=r"bad\.jpg: "):
        load_image(bad, 16)


@pytest.mark.parametrize("cache", [True, False])
def test_training_skips_truncated_file_at_start_naming_it(tmp_path: Path, caplog, cache) -> None:
    """Before, the lazy mode only checked headers: a truncated file failed mid-training."""
    import io
    import logging

    from PIL import Image

    good = tmp_path / "good.png"
    _deep_png(good)
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(
        buffer, "PNG"
    )
    cut = tmp_path / "cut.png"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with caplog.at_level(logging.WARNING):
        images = FolderImages([cut, good], SIDE, cache=cache)
    assert images.files == [good]
    assert any("cut.png: corrupt or truncated image" in r.getMessage() for r in caplog.records)
    assert torch.equal(images.get(0), _reference(good))
