"""The offline model's highlight term (rave.losses.highlight_loss), on closed-form cases."""

from __future__ import annotations

import pytest
import torch

from rave.losses import highlight_loss
from rave.training.methods.rave import RaveOptions


def _image(value: float, size: int = 4) -> torch.Tensor:
    return torch.full((1, 3, size, size), value)


def test_zero_when_the_output_clips_nothing() -> None:
    inputs = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    # brighter, but every pixel stays below the knee
    assert float(highlight_loss((inputs * 1.1).clamp(max=0.89), inputs, knee=0.9)) == 0.0
    # a pixel above the knee that is not brighter than its input costs nothing either
    bright = _image(0.95)
    assert float(highlight_loss(bright.clone(), bright, knee=0.9)) == 0.0
    assert float(highlight_loss(bright * 0.99, bright, knee=0.9)) == 0.0


def test_already_saturated_input_pixels_are_free() -> None:
    inputs = _image(1.0)
    assert float(highlight_loss(torch.ones_like(inputs), inputs)) == 0.0


def test_one_clipped_pixel_closed_form_value_and_gradient() -> None:
    inputs = _image(0.5)
    enhanced = _image(0.6)
    enhanced[0, 1, 2, 3] = 1.0  # one pixel pushed to white in its green channel
    enhanced.requires_grad_(True)
    loss = highlight_loss(enhanced, inputs, knee=0.9)
    n_pixels = 16
    assert float(loss.detach()) == pytest.approx(0.1**2 / n_pixels, rel=1e-3)
    loss.backward()
    grad = enhanced.grad
    assert grad is not None
    # only the brightest channel of the clipped pixel is pushed, and downward under descent
    assert float(grad[0, 1, 2, 3]) == pytest.approx(2 * 0.1 / n_pixels, rel=1e-3)
    grad[0, 1, 2, 3] = 0
    assert float(grad.abs().max()) == 0.0


def test_with_the_light_map_a_blown_pixel_keeps_its_gradient() -> None:
    from rave.network import apply_light_map

    inputs = _image(0.5)
    light = torch.full((1, 1, 4, 4), 1.0)
    light[0, 0, 2, 3] = 0.25  # this pixel goes to 2.0 before the clamp: blown
    light.requires_grad_(True)
    enhanced = apply_light_map(inputs, light)
    # on the clamped output alone: a pixel at white costs (1 - knee)^2 but has no gradient
    clamped = highlight_loss(enhanced, inputs, knee=0.9)
    (grad_clamped,) = torch.autograd.grad(clamped, light)
    assert float(grad_clamped.abs().max()) == 0.0
    # before the clamp: overshoot 2.0 - 0.9 = 1.1 for that pixel, d/dL = 2 * 1.1 * (-0.5 / L^2)
    unclamped = highlight_loss(enhanced, inputs, knee=0.9, light=light)
    n_pixels = 16
    assert float(unclamped.detach()) == pytest.approx(1.1**2 / n_pixels, rel=1e-4)
    (grad,) = torch.autograd.grad(unclamped, light)
    assert float(grad[0, 0, 2, 3]) == pytest.approx(-2 * 1.1 * 0.5 / 0.25**2 / n_pixels, rel=1e-4)
    grad[0, 0, 2, 3] = 0
    assert float(grad.abs().max()) == 0.0  # pixels that stay at 0.5 cost nothing


def test_with_the_light_map_the_gain_is_capped() -> None:
    inputs = _image(0.5)
    tiny = torch.full((1, 1, 4, 4), 1e-3, requires_grad=True)
    loss = highlight_loss(inputs, inputs, knee=0.9, light=tiny, max_gain=3.0)
    assert float(loss.detach()) == pytest.approx((3.0 - 0.9) ** 2, rel=1e-5)
    with pytest.raises(ValueError, match="light map"):
        highlight_loss(inputs, inputs, light=tiny[:, :, :2])
    with pytest.raises(ValueError, match="max_gain"):
        highlight_loss(inputs, inputs, light=tiny, max_gain=1.0)


def test_ceiling_is_the_input_above_the_knee() -> None:
    inputs = _image(0.95)
    enhanced = _image(0.97)
    assert float(highlight_loss(enhanced, inputs, knee=0.9)) == pytest.approx(0.02**2, rel=1e-3)
    # lowering the knee below the input changes nothing: the input is the ceiling
    assert float(highlight_loss(enhanced, inputs, knee=0.5)) == pytest.approx(0.02**2, rel=1e-3)


def test_more_clipping_costs_more() -> None:
    inputs = _image(0.7, size=8)
    losses = []
    for n_white in (1, 4, 16):
        enhanced = inputs.clone()
        enhanced.view(1, 3, -1)[:, :, :n_white] = 1.0
        losses.append(float(highlight_loss(enhanced, inputs)))
    assert 0 < losses[0] < losses[1] < losses[2]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="knee"):
        highlight_loss(_image(0.5), _image(0.5), knee=1.0)
    with pytest.raises(ValueError, match="expected two"):
        highlight_loss(_image(0.5), _image(0.5, size=2))


def test_off_by_default_in_rave() -> None:
    # RAVE stays the paper's method unless a config asks for the offline recipe's term
    assert RaveOptions().highlight_weight == 0.0


def test_darkening_term_costs_only_bright_pixels_made_darker() -> None:
    from rave.losses import highlight_darkening_loss

    inputs = torch.tensor([0.2, 0.5, 0.95, 1.0]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4).clone()
    # brightening anything, or darkening pixels below the knee, is free
    assert float(highlight_darkening_loss((inputs * 1.04).clamp(max=1), inputs)) == 0.0
    darker_shadows = inputs.clone()
    darker_shadows[..., :2] *= 0.5
    assert float(highlight_darkening_loss(darker_shadows, inputs, knee=0.9)) == 0.0
    # the two bright pixels darkened by 0.1 each: mean over 4 pixels of 0.1 ** 2, twice
    darker = inputs - 0.1
    expected = 2 * 0.1**2 / 4
    assert float(highlight_darkening_loss(darker, inputs, knee=0.9)) == pytest.approx(expected)
    # a saturated input pixel counts (white clouds stay white); the largest channel decides
    cloud = torch.ones(1, 3, 1, 1)
    tinted = torch.tensor([1.0, 0.7, 0.7]).reshape(1, 3, 1, 1)
    assert float(highlight_darkening_loss(tinted, cloud)) == 0.0
    assert float(highlight_darkening_loss(cloud * 0.8, cloud)) == pytest.approx(0.04)
    with pytest.raises(ValueError, match="knee"):
        highlight_darkening_loss(cloud, cloud, knee=0.0)
    # with `saturated`, clipped input pixels may darken back into range; 0.95 is still held
    assert float(highlight_darkening_loss(cloud * 0.8, cloud, saturated=0.99)) == 0.0
    expected_one = 0.1**2 / 4
    assert float(highlight_darkening_loss(darker, inputs, saturated=0.99)) == pytest.approx(
        expected_one
    )
    with pytest.raises(ValueError, match="saturated"):
        highlight_darkening_loss(cloud, cloud, knee=0.9, saturated=0.9)


def test_darkening_term_gradient_raises_a_darkened_highlight() -> None:
    from rave.losses import highlight_darkening_loss

    inputs = torch.full((1, 3, 2, 2), 0.95)
    enhanced = torch.full((1, 3, 2, 2), 0.8, requires_grad=True)
    highlight_darkening_loss(enhanced, inputs).backward()
    assert enhanced.grad is not None
    # only the largest channel (amax picks one per pixel) is pulled, and upward
    assert float(enhanced.grad.sum()) < 0
