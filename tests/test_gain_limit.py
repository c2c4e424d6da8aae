"""rave.losses.light_map_gain_excess: closed forms and the property it exists for."""

from __future__ import annotations

import math

import pytest
import torch

from rave.losses import light_map_gain_excess
from rave.training.methods.rave import RaveOptions


def test_gains_at_or_below_the_limit_cost_nothing() -> None:
    # gains 1 (L = 1), 2 (L = 0.5) and exactly 3 (L = 1/3) against a limit of 3
    light = torch.tensor([1.0, 0.5, 1.0 / 3.0]).reshape(1, 1, 1, 3)
    assert light_map_gain_excess(light, 3.0).item() == pytest.approx(0.0, abs=1e-12)


def test_closed_form_in_log_gain() -> None:
    # one pixel of four at gain 6 against a limit of 2: (log 6 - log 2)^2 / 4 = log(3)^2 / 4
    light = torch.ones(1, 1, 2, 2)
    light[0, 0, 0, 1] = 1.0 / 6.0
    expected = math.log(3.0) ** 2 / 4
    assert light_map_gain_excess(light, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_depends_on_the_ratio_to_the_limit() -> None:
    # gain 8 against 4 costs what gain 4 costs against 2
    assert light_map_gain_excess(torch.full((1, 1, 2, 2), 1 / 8), 4.0).item() == pytest.approx(
        light_map_gain_excess(torch.full((1, 1, 2, 2), 1 / 4), 2.0).item(), rel=1e-6
    )


def test_gradient_raises_only_the_light_of_pixels_over_the_limit() -> None:
    light = torch.tensor([0.1, 0.5, 0.9]).reshape(1, 1, 1, 3).requires_grad_(True)
    light_map_gain_excess(light, 4.0).backward()  # only the first pixel (gain 10) is over
    assert light.grad is not None
    assert light.grad[0, 0, 0, 0] < 0  # descent raises L there: less gain
    assert light.grad[0, 0, 0, 1:].abs().max() == 0


def test_zero_light_is_floored_and_bad_arguments_refused() -> None:
    light = torch.zeros(1, 1, 2, 2)
    assert math.isfinite(light_map_gain_excess(light, 2.0, eps=1e-3).item())
    with pytest.raises(ValueError, match="light map"):
        light_map_gain_excess(torch.ones(1, 3, 2, 2), 2.0)
    with pytest.raises(ValueError, match="max_gain must be > 1"):
        light_map_gain_excess(torch.ones(1, 1, 2, 2), 1.0)


def test_off_by_default_in_rave_and_limit_checked() -> None:
    assert RaveOptions().gain_limit_weight == 0.0
    with pytest.raises(ValueError, match="gain_limit must be > 1"):
        RaveOptions(gain_limit=0.5)
