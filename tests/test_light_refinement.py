"""Light-map refinement: its closed forms, its guarantee, its file metadata, and every engine.

References are independent of the engines: the whole-image eager network followed by the
refinement (``EnhancementNet.light_map``), the guided filter's exactness on linear
functions of the guide, and the highlight bound ``I / L' <= max(knee, m)``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rave.inference import enhance_tensor, predict_light_map
from rave.network import CheckpointError, EnhancementNet, LightRefinement, light_refinement_of
from rave.zoo import load_enhancer

# The tiled engine (Winograd kernel, AVX2 or AVX-512) against eager PyTorch, as in
# tests/test_inference.py: float32 rounding gives about 1e-6, the bound leaves room for the
# AVX2 build's larger per-layer rounding.
ENGINE_TOLERANCE = 1e-4


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _net(seed: int = 0) -> EnhancementNet:
    torch.manual_seed(seed)
    net = EnhancementNet().eval()
    with torch.no_grad():  # a light map well inside (0, 1): the refinement has work to do
        net.cond_add1.bias.fill_(0.4)
    return net


def _backlit(height: int, width: int, seed: int) -> torch.Tensor:
    """Dark textured foreground under a bright band, in [0, 1]."""
    image = 0.02 + 0.2 * torch.rand(1, 3, height, width, generator=_generator(seed))
    image[..., : max(1, height // 4), :] = 0.95
    return image


@pytest.mark.parametrize("radius", [0, 2, 8])
def test_no_pixel_rises_above_the_knee_unless_it_already_was(radius: int) -> None:
    refinement = LightRefinement(radius=radius, eps=0.1, knee=0.9)
    image = torch.rand(2, 3, 40, 50, generator=_generator(1))
    image[0, :, :10] = 1.0  # a blown sky
    light = torch.rand(2, 1, 40, 50, generator=_generator(2)) * 0.3  # gains up to 1000x
    light[1, :, 5:9] = 0.0  # a dead light map blows everything
    refined = refinement(light, image)
    largest = image.amax(dim=1, keepdim=True)
    output = (image / refined).clamp(0, 1).amax(dim=1, keepdim=True)
    bound = torch.maximum(largest, torch.full_like(largest, 0.9))
    assert bool((output <= bound * (1 + 1e-5)).all())
    assert bool((refined > 0).all())


def test_a_light_map_that_follows_the_guide_linearly_is_kept() -> None:
    """log L = a log m + b is exactly the guided filter's model; above the guard, unchanged."""
    image = 0.05 + 0.5 * torch.rand(1, 3, 30, 36, generator=_generator(3))
    largest = image.amax(dim=1, keepdim=True)
    light = 0.9 * largest**0.5  # gain 1.1 / sqrt(m): dark pixels lifted most, none past 0.9
    refined = LightRefinement(radius=3, eps=1e-6, knee=0.9)(light, image)
    assert torch.allclose(refined, light, rtol=1e-3)


def test_texture_of_the_light_map_is_removed_where_the_photo_is_flat() -> None:
    image = torch.full((1, 3, 48, 48), 0.1)
    image[..., 24:, :] = 0.6  # one edge in the photo, between rows 23 and 24
    texture = 0.3 * (torch.rand(1, 1, 48, 48, generator=_generator(4)) - 0.5)
    base = torch.where(torch.arange(48)[:, None] < 24, 0.3, 0.9).expand(1, 1, 48, 48)
    light = base * torch.exp(texture)
    refined = LightRefinement(radius=4, eps=0.1, knee=1.0)(light, image)
    for rows in (slice(2, 20), slice(28, 46)):  # away from the edge
        before = torch.log(light[..., rows, :]).std()
        after = torch.log(refined[..., rows, :]).std()
        assert after < 0.25 * before
    # the step at the photo's edge survives: the two halves keep their own level
    assert refined[..., 4:20, :].mean() < 0.5 < refined[..., 28:44, :].mean()


def test_settings_are_checked_and_round_trip_through_metadata() -> None:
    refinement = LightRefinement(radius=5, eps=0.2, knee=0.85)
    assert LightRefinement.from_metadata(refinement.to_metadata(), "x") == refinement
    assert refinement.halo == 10
    for bad in (dict(radius=-1), dict(radius=1.5), dict(eps=0.0), dict(knee=0.0), dict(knee=2)):
        with pytest.raises(ValueError):
            LightRefinement(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"model\.safetensors: bad light_refinement"):
        LightRefinement.from_metadata('{"radius": 3, "colour": 1}', "model.safetensors")
    with pytest.raises(ValueError, match="bad light_refinement"):
        LightRefinement.from_metadata("[8]", "f")


def _save(path: Path, net: EnhancementNet, metadata: dict[str, str] | None) -> Path:
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path), metadata)
    return path


def test_weights_files_carry_the_refinement_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    net = _net()
    refinement = LightRefinement(radius=3)
    with_it = _save(
        tmp_path / "refined.safetensors", net, {"light_refinement": refinement.to_metadata()}
    )
    without = _save(tmp_path / "plain.safetensors", net, {"format": "rave-enhancer"})
    assert load_enhancer(with_it).light_refinement == refinement
    assert load_enhancer(without).light_refinement is None
    bad = _save(tmp_path / "bad.safetensors", net, {"light_refinement": '{"radius": -2}'})
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: bad light_refinement"):
        load_enhancer(bad)
    # a PyTorch checkpoint records it next to its weights
    pt = tmp_path / "run.pt"
    torch.save({"model": net.state_dict(), "light_refinement": refinement.to_metadata()}, pt)
    assert load_enhancer(pt).light_refinement == refinement
    assert light_refinement_of(pt, {"model": {}}) is None


@pytest.mark.parametrize(
    ("height", "width", "tile"),
    [(2, 2, None), (7, 9, None), (7, 9, 4), (2, 40, 16), (203, 317, None), (203, 317, 64)],
)
def test_tiled_engine_equals_the_whole_image_refined_light_map(
    height: int, width: int, tile: int | None
) -> None:
    net = _net()
    net.light_refinement = LightRefinement(radius=6, eps=0.1, knee=0.9)
    image = _backlit(height, width, seed=height)
    with torch.inference_mode():
        expected = net.light_map(image)
        raw = net(image)
    got = predict_light_map(net, image, tile=tile)
    assert torch.allclose(got, expected, atol=ENGINE_TOLERANCE, rtol=0)
    if min(height, width) > 8:  # the refinement changed something worth comparing
        assert (got - raw).abs().max() > 1e-2


@pytest.mark.parametrize(("tile", "columns"), [(None, 1024), (32, 1024), (8, 1024), (32, 24)])
def test_in_place_enhancement_waits_for_the_refinements_reach(
    monkeypatch: pytest.MonkeyPatch, tile: int | None, columns: int
) -> None:
    """Bands read light map and pixels 2 r beyond their own: in-place writes must wait.

    One band (whole image), bands of 32 rows (the tile rows), rows of 8, fewer than the
    refinement's reach of 16, which must pile up before a band can be refined; and bands
    refined in blocks of 24 columns (6 blocks across), each reading 16 columns beyond.
    """
    from rave.inference import tiled

    monkeypatch.setattr(tiled, "_REFINE_BLOCK_COLUMNS", columns)
    net = _net(1)
    net.light_refinement = LightRefinement(radius=8)
    image = (_backlit(150, 130, seed=5) * 255).round().to(torch.uint8)
    with torch.inference_mode():
        reference = (image.float() / 255 / net.light_map(image.float() / 255)).clamp(0, 1)
    expected = enhance_tensor(net, image, tile=tile)
    assert torch.allclose(expected, reference, atol=ENGINE_TOLERANCE, rtol=0)
    in_place = image.clone()
    enhance_tensor(net, in_place, tile=tile, out=in_place)
    assert torch.equal(in_place, (expected * 255).round().to(torch.uint8))
    light = predict_light_map(net, image, tile=tile)
    with torch.inference_mode():
        assert torch.allclose(
            light, net.light_map(image.float() / 255), atol=ENGINE_TOLERANCE, rtol=0
        )


def test_a_precomputed_light_map_is_not_refined_twice() -> None:
    net = _net()
    net.light_refinement = LightRefinement(radius=4)
    image = _backlit(40, 50, seed=6)
    light = predict_light_map(net, image, tile=16)
    again = enhance_tensor(net, image, light_map=light, tile=16)
    assert torch.allclose(again, (image / light).clamp(0, 1), atol=1e-6)


def test_guard_only_refinement_keeps_every_unguarded_pixel() -> None:
    net = _net()
    image = _backlit(30, 30, seed=7)
    with torch.inference_mode():
        raw = net(image)
    refined = LightRefinement(radius=0, knee=0.9)(raw, image)
    guard = torch.clamp(image.amax(dim=1, keepdim=True) / 0.9, max=1.0)
    assert torch.allclose(refined, torch.maximum(raw.clamp(min=1e-3), guard), rtol=1e-5)


def test_onnx_export_runs_the_refinement_at_any_size(tmp_path: Path) -> None:
    pytest.importorskip("onnx", reason='needs the export extra: pip install -e ".[export]"')
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from rave.export import export_onnx

    refinement = LightRefinement(radius=5)
    weights = _save(
        tmp_path / "refined.safetensors", _net(), {"light_refinement": refinement.to_metadata()}
    )
    net = load_enhancer(weights)
    model = tmp_path / "refined.onnx"
    props = {p.key: p.value for p in export_onnx(weights, model).metadata_props}
    assert LightRefinement.from_metadata(props["light_refinement"], "onnx") == refinement
    assert onnx.load(str(model)).graph.node  # a loadable graph
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for height, width in ((2, 2), (7, 9), (61, 45)):
        image = _backlit(height, width, seed=width)
        (light,) = session.run(None, {"image": image.numpy()})
        with torch.inference_mode():
            expected = net.light_map(image)
        assert float((torch.from_numpy(light) - expected).abs().max()) <= 1e-4
