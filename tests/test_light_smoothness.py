"""rave.losses.light_map_total_variation: closed forms and the property it exists for."""

from __future__ import annotations

import math

import pytest
import torch

from rave.losses import light_map_total_variation
from rave.training.methods.rave import RaveOptions


def test_constant_light_map_costs_nothing() -> None:
    light = torch.full((2, 1, 5, 7), 0.4)
    assert light_map_total_variation(light).item() == 0.0


def test_one_vertical_step_closed_form() -> None:
    # left half L = 0.5, right half L = 1: one column pair of the W - 1 differs by log 2
    h, w = 4, 6
    light = torch.ones(1, 1, h, w)
    light[..., : w // 2] = 0.5
    expected = math.log(2.0) / (w - 1)  # horizontal term; the vertical one is zero
    assert light_map_total_variation(light).item() == pytest.approx(expected, rel=1e-6)


def test_depends_on_the_ratio_not_the_level() -> None:
    light = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.1
    tv = light_map_total_variation(light)
    assert light_map_total_variation(light * 3.0).item() == pytest.approx(tv.item(), rel=1e-5)


def test_texture_costs_more_than_a_step_of_the_same_height() -> None:
    # why L1 on log L: a light map that follows fine texture (alternating columns) costs
    # W - 1 times what one illumination edge of the same ratio costs
    w = 9
    step = torch.ones(1, 1, 4, w)
    step[..., : w // 2] = 0.5
    texture = torch.ones(1, 1, 4, w)
    texture[..., ::2] = 0.5
    ratio = light_map_total_variation(texture) / light_map_total_variation(step)
    assert ratio.item() == pytest.approx(w - 1, rel=1e-5)


def test_gradient_pulls_an_outlier_towards_its_neighbours() -> None:
    light = torch.full((1, 1, 5, 5), 0.5)
    light[0, 0, 2, 2] = 0.8
    light.requires_grad_(True)
    light_map_total_variation(light).backward()
    assert light.grad is not None
    assert light.grad[0, 0, 2, 2] > 0  # descent lowers the bright outlier
    assert light.grad[0, 0, 1, 2] < 0  # and raises its neighbours


def test_zero_light_is_floored_not_infinite() -> None:
    light = torch.ones(1, 1, 3, 3)
    light[0, 0, 1, 1] = 0.0
    assert math.isfinite(light_map_total_variation(light, eps=1e-3).item())


def test_bad_shapes() -> None:
    with pytest.raises(ValueError, match="light map"):
        light_map_total_variation(torch.ones(1, 3, 4, 4))
    with pytest.raises(ValueError, match="light map"):
        light_map_total_variation(torch.ones(1, 1, 1, 4))


def test_off_by_default_in_rave() -> None:
    assert RaveOptions().light_tv_weight == 0.0
