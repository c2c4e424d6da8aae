"""The enhancement network against the reference implementation's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rave.network import (
    EnhancementNet,
    apply_light_map,
    build_enhancer,
    count_parameters,
    extract_state_dict,
    load_checkpoint_file,
)
from rave.network.enhancer import PYRAMID_BINS, adaptive_avg_pool_by_membership


def test_parameter_count_matches_the_paper_network() -> None:
    assert count_parameters(EnhancementNet()) == 278_790


def test_state_dict_names_are_the_reference_names(checkpoints_dir: Path) -> None:
    raw = load_checkpoint_file(checkpoints_dir / "rave_unpaired.pth")
    ours = EnhancementNet().state_dict().keys()
    assert {f"module.{k}" for k in ours} == set(raw.keys())


@pytest.mark.parametrize(
    "golden_name",
    ["rave_unpaired__05_384x256.npz", "clip_lit_original__41_301x197.npz"],
)
def test_reproduces_golden_outputs(golden_name: str, golden_dir: Path, checkpoints_dir: Path):
    golden = np.load(golden_dir / golden_name)
    checkpoint = checkpoints_dir / f"{golden['checkpoint']}.pth"
    net = build_enhancer(extract_state_dict(load_checkpoint_file(checkpoint)))
    image = torch.from_numpy(golden["input"]).permute(2, 0, 1)[None].float() / 255.0
    with torch.no_grad():
        light = net(image)
        enhanced = apply_light_map(image, light)
    assert np.abs(light[0, 0].numpy() - golden["light_map"]).max() <= 1e-4
    assert np.abs(enhanced[0].permute(1, 2, 0).numpy() - golden["enhanced"]).max() <= 1e-4
    # and through the inference engine (the Winograd kernel on CPU, whole and tiled): `make
    # test` runs this file once more with an AVX2 build of the kernel
    from rave.inference import predict_light_map

    for tile in (None, 96):
        engine_light = predict_light_map(net, image, tile=tile)
        assert np.abs(engine_light[0, 0].numpy() - golden["light_map"]).max() <= 1e-4


def test_every_golden_file_is_covered(golden_dir: Path) -> None:
    # New golden files must be added to the parametrisation above.
    assert sorted(p.name for p in golden_dir.glob("*.npz")) == sorted(
        ["rave_unpaired__05_384x256.npz", "clip_lit_original__41_301x197.npz"]
    )


def test_padding_mode_switches_only_the_outer_convs() -> None:
    net = EnhancementNet(padding_mode="zeros")
    assert [c.padding_mode for c in net.outer_convs] == ["zeros"] * 4
    assert net.ResidualBlock1.conv1.padding_mode == "reflect"
    net.set_padding_mode("reflect")
    assert [c.padding_mode for c in net.outer_convs] == ["reflect"] * 4
    with pytest.raises(ValueError, match="padding_mode"):
        net.set_padding_mode("circular")  # type: ignore[arg-type]


def test_padding_mode_changes_only_the_border() -> None:
    torch.manual_seed(0)
    net = EnhancementNet().eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        reflect = net(image)
        zeros = net.set_padding_mode("zeros")(image)
    # The border differs (different padding); far from it, only the PPM's global context
    # (which sees the border) can, so the difference must be concentrated at the edges.
    border = (reflect - zeros).abs()
    assert border[..., :2, :].max() > 10 * border[..., 24:40, 24:40].max()


def test_apply_light_map_is_clamped_division() -> None:
    image = torch.tensor([0.2, 0.5, 0.0]).view(1, 3, 1, 1)
    light = torch.tensor(0.4).view(1, 1, 1, 1)
    out = apply_light_map(image, light)
    assert torch.allclose(out.flatten(), torch.tensor([0.5, 1.0, 0.0]))
    zero_light = apply_light_map(image, torch.zeros(1, 1, 1, 1))
    assert torch.equal(zero_light.flatten(), torch.tensor([1.0, 1.0, 0.0]))


def test_rejects_non_rgb_batches() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        EnhancementNet()(torch.rand(3, 8, 8))


@pytest.mark.parametrize(("height", "width"), [(2, 2), (7, 9), (13, 5), (37, 61)])
def test_membership_pooling_equals_adaptive_avg_pool(height: int, width: int) -> None:
    x = torch.rand(2, 4, height, width, generator=torch.Generator().manual_seed(height))
    for bins in PYRAMID_BINS:
        expected = torch.nn.functional.adaptive_avg_pool2d(x, bins)
        assert torch.allclose(adaptive_avg_pool_by_membership(x, bins), expected, atol=1e-6)
