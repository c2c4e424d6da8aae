"""LPIPS runs where `rave evaluate --device` says (it ran on the CPU whatever the device).

No GPU here: the device a model lives on is simulated with PyTorch's ``meta`` device, and the
CLI's choice is read from the call that loads the LPIPS network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from rave.cli import evaluate as evaluate_cli
from rave.cli import main
from rave.evaluation import perceptual


class _Recording(nn.Module):
    """An LPIPS stand-in on the meta device that records where its inputs are."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, device="meta"))
        self.devices: list[torch.device] = []

    def forward(self, pred: torch.Tensor, target: torch.Tensor, normalize: bool) -> torch.Tensor:
        self.devices += [pred.device, target.device]
        return torch.tensor(0.25)


def test_the_images_go_to_the_lpips_networks_device() -> None:
    model = _Recording()
    image = np.full((8, 8, 3), 0.5, np.float32)
    assert perceptual.lpips(image, image, model=model) == 0.25
    assert model.devices == [torch.device("meta")] * 2


def test_rave_evaluate_loads_lpips_on_the_device_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder in ("pred", "gt"):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (64, 48), (90, 60, 30)).save(tmp_path / folder / "a.png")
    asked: list[object] = []
    real = perceptual.load_lpips

    def load(*, pretrained_backbone: bool = True, device: object = "cpu") -> nn.Module:
        asked.append(device)
        return real(pretrained_backbone=False)

    monkeypatch.setattr(perceptual, "load_lpips", load)
    # --device as resolved: a device other than the CPU default, which no GPU is needed for
    monkeypatch.setattr(evaluate_cli, "resolve_device", lambda name: torch.device("meta"))
    args = ["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt")]
    result = CliRunner().invoke(main, [*args, "--no-nr", "--device", "cuda", "-q"])
    assert result.exit_code == 0, result.output
    assert [str(device) for device in asked] == ["meta"]
    assert "LPIPS" in result.output
