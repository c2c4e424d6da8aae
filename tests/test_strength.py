"""Strength ``S``: ``clamp(I / L**S, 0, 1)`` in the engine, the API and the CLI."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import rave
from rave.api import enhance_array
from rave.inference import enhance_tensor, predict_light_map


def _photo(photos_dir: Path, name: str = "dicm/01.jpg", side: int = 160) -> np.ndarray:
    path = photos_dir / name
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.thumbnail((side, side))
        return np.asarray(image).copy()


@pytest.mark.parametrize("tile", [None, 48])
def test_strength_one_is_todays_output_bit_for_bit(net, photos_dir: Path, tile) -> None:
    image = torch.from_numpy(_photo(photos_dir)).permute(2, 0, 1)[None].float() / 255
    light = predict_light_map(net, image, tile=tile)
    # The paper's formula written out independently of the engine's strength code path.
    expected = torch.nan_to_num(image / light, nan=0.0).clamp(0, 1)
    assert torch.equal(enhance_tensor(net, image, tile=tile, strength=1.0), expected)
    assert torch.equal(enhance_tensor(net, image, tile=tile), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("tile", [None, 48])
def test_strength_zero_returns_the_input_exactly(net, photos_dir: Path, dtype, tile) -> None:
    pixels = _photo(photos_dir).astype(np.float64) / 255
    if dtype == np.uint16:
        pixels = (pixels * 65535).round().astype(np.uint16)
        pixels[0, 0] = 65535  # extremes survive the float round trip
        pixels[0, 1] = 0
    elif dtype == np.uint8:
        pixels = (pixels * 255).round().astype(np.uint8)
    else:
        pixels = pixels.astype(np.float32)
    out = enhance_array(net, pixels, tile=tile, strength=0.0)
    assert out.dtype == pixels.dtype and np.array_equal(out, pixels)
    grey = pixels[:, :, 0]
    assert np.array_equal(enhance_array(net, grey, tile=tile, strength=0), grey)


def test_strength_is_monotone_on_real_photos(net, photos_dir: Path) -> None:
    names = sorted(
        p.relative_to(photos_dir).as_posix() for p in (photos_dir / "dicm").glob("*.jpg")
    )
    if not names:
        pytest.skip("no real photos")
    for name in names[:3]:
        pixels = _photo(photos_dir, name, side=128)
        light = predict_light_map(net, torch.from_numpy(pixels).permute(2, 0, 1)[None])[
            0, 0
        ].numpy()
        outputs = [enhance_array(net, pixels, strength=s) for s in (0.0, 0.5, 1.0, 1.5, 2.5)]
        means = [o.astype(np.float64).mean() for o in outputs]
        assert all(a < b for a, b in itertools.pairwise(means)), (name, means)
        # Per pixel: where the light map is below 1 the result only brightens with S,
        # where it is above 1 it only darkens (I / L**S is monotone in S per pixel).
        dim, bright = light < 1, light > 1
        for lower, higher in itertools.pairwise(outputs):
            assert np.all(higher[dim] >= lower[dim]), name
            assert np.all(higher[bright] <= lower[bright]), name


def test_given_light_map_equals_running_the_network(net, photos_dir: Path) -> None:
    pixels = _photo(photos_dir)
    light = predict_light_map(net, torch.from_numpy(pixels).permute(2, 0, 1)[None], tile=64)
    for strength in (0.3, 1.0, 1.7):
        direct = enhance_array(net, pixels, tile=64, strength=strength)
        relit = enhance_array(
            net, pixels, tile=64, strength=strength, light_map=light[0, 0].numpy()
        )
        assert np.array_equal(direct, relit)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_strength_is_refused(net, bad: float) -> None:
    with pytest.raises(ValueError, match="strength"):
        enhance_array(net, np.zeros((8, 8, 3), np.uint8), strength=bad)


def test_api_and_cli_take_strength(net, photos_dir: Path, tmp_path: Path) -> None:
    from rave.cli import main

    pixels = _photo(photos_dir, side=96)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    mild = rave.enhance(Image.fromarray(pixels), net, strength=0.5)
    assert np.array_equal(np.asarray(mild), enhance_array(net, pixels, strength=0.5))
    for strength in ("0", "0.5"):
        output = str(tmp_path / strength)
        args = ["enhance", str(tmp_path / "in.png"), "-o", output, "--strength", strength, "-q"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "0" / "in.png")), pixels)
    result = CliRunner().invoke(main, ["enhance", str(tmp_path / "in.png"), "--strength", "-1"])
    assert result.exit_code == 2 and "strength" in result.output.lower()
