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
    assert float(loss) == pytest.approx(0.1**2 / n_pixels, rel=1e-3)
    loss.backward()
    grad = enhanced.grad
    assert grad is not None
    # only the brightest channel of the clipped pixel is pushed, and downward under descent
    assert float(grad[0, 1, 2, 3]) == pytest.approx(2 * 0.1 / n_pixels, rel=1e-3)
    grad[0, 1, 2, 3] = 0
    assert float(grad.abs().max()) == 0.0


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
