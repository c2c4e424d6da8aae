"""The light-map smoothing stage: the guided filter, its target, and the method in training."""

from __future__ import annotations

import math

import pytest
import torch

from rave.losses import box_mean, guided_filter
from rave.training.methods.smooth_light import SmoothLightOptions, smoothed_log_light


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_box_mean_closed_form_and_border() -> None:
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    got = box_mean(x, 1)
    assert got[0, 0, 2, 2].item() == pytest.approx(x[0, 0, 1:4, 1:4].mean().item())
    # at a corner the window averages the 2 x 2 pixels it covers in the image
    assert got[0, 0, 0, 0].item() == pytest.approx(x[0, 0, :2, :2].mean().item())
    assert got[0, 0, 0, 2].item() == pytest.approx(x[0, 0, :2, 1:4].mean().item())
    assert torch.equal(box_mean(x, 0), x)
    # any size, any radius: a constant stays constant up to the border
    for shape in ((1, 1), (2, 7), (9, 3)):
        flat = torch.full((1, 2, *shape), 0.37)
        assert torch.allclose(box_mean(flat, 4), flat, atol=1e-6)


def test_guided_filter_keeps_linear_functions_of_the_guide() -> None:
    # in every window the least-squares fit of a * guide + b is exact (up to the eps shrink,
    # negligible against a guide variance of about 1/12 here)
    guide = torch.rand(1, 1, 16, 16, generator=_generator(0))
    source = 2.0 * guide - 0.5
    got = guided_filter(source, guide, 2, 1e-8)
    torch.testing.assert_close(got, source, atol=1e-4, rtol=0)


def test_guided_filter_smooths_where_the_guide_is_flat_and_keeps_its_edges() -> None:
    # guide: dark left half, bright right half (an outline); source: the same step plus
    # texture that the guide does not have
    h, w, radius = 16, 16, 3
    guide = torch.zeros(1, 1, h, w)
    guide[..., w // 2 :] = 2.0
    step = torch.zeros(1, 1, h, w)
    step[..., w // 2 :] = -1.0
    texture = 0.2 * torch.randn(1, 1, h, w, generator=_generator(1))
    got = guided_filter(step + texture, guide, radius, 0.01)
    # inside each half the texture is mostly gone (a window of 49 pixels averages it)
    for half in (slice(0, w // 2), slice(w // 2, w)):
        left_over = (got - step)[..., half].std().item()
        assert left_over < 0.5 * texture[..., half].std().item()
    # and the step survives at the guide's edge instead of being blurred over the window
    left, right = got[..., w // 2 - 1].mean(), got[..., w // 2].mean()
    assert (left - right).item() > 0.8


def test_guided_filter_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="guide"):
        guided_filter(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 8, 8), 1, 0.1)
    with pytest.raises(ValueError, match="eps must be > 0"):
        guided_filter(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), 1, 0.0)


def test_target_never_brightens_past_the_knee_or_the_teacher() -> None:
    inputs = torch.rand(2, 3, 24, 24, generator=_generator(2)) * 0.95 + 0.05
    # a textured light map that lifts dark pixels up to 4 times
    teacher = (0.25 + 0.75 * torch.rand(2, 1, 24, 24, generator=_generator(3))).clamp(max=1)
    knee = 0.9
    target = smoothed_log_light(teacher, inputs, radius=3, eps=0.1, knee=knee)
    largest = inputs.amax(dim=1, keepdim=True)
    out_target = largest / target.exp()
    out_teacher = largest / teacher
    assert bool((out_target <= torch.maximum(out_teacher, torch.tensor(knee)) + 1e-5).all())

    # it is smoother than the teacher's map (the point of the stage)
    def roughness(log_light: torch.Tensor) -> float:
        return (log_light[..., 1:, :] - log_light[..., :-1, :]).abs().mean().item()

    assert roughness(target) < 0.5 * roughness(teacher.log())


def test_target_of_a_smooth_light_map_is_itself() -> None:
    # a constant light map, no highlights: nothing to smooth, nothing to cap
    inputs = torch.full((1, 3, 12, 12), 0.2)
    teacher = torch.full((1, 1, 12, 12), 0.5)
    target = smoothed_log_light(teacher, inputs, radius=2, eps=0.1, knee=0.9)
    torch.testing.assert_close(target, torch.full_like(target, math.log(0.5)))


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="radius"):
        SmoothLightOptions(teacher="x", radius=0)
    with pytest.raises(ValueError, match="eps"):
        SmoothLightOptions(teacher="x", eps=0.0)
    with pytest.raises(ValueError, match="knee"):
        SmoothLightOptions(teacher="x", knee=1.5)
