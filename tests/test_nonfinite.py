"""Non-finite pixels, broken light maps and degenerate checkpoints are errors, not black images.

Before: one NaN pixel (or 3e38) turned the whole output black through the pyramid pooling;
a checkpoint with NaN weights gave an all-black photo and one with all-zero weights a
near-white one, both with exit status 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rave.api import enhance_array
from rave.cli import main
from rave.network.checkpoint import CheckpointError, build_enhancer
from rave.network.enhancer import EnhancementNet, start_as_identity


@pytest.fixture
def identity_net() -> EnhancementNet:
    torch.manual_seed(0)
    return start_as_identity(EnhancementNet(padding_mode="reflect")).eval()


def _image(height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(0).uniform(0.1, 0.5, (height, width, 3)).astype(np.float32)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 3e38])
def test_bad_float_pixel_refused(identity_net: EnhancementNet, bad: float) -> None:
    pixels = _image()
    assert np.allclose(enhance_array(identity_net, pixels, tile=None), pixels, atol=1e-6)
    pixels[5, 7, 1] = bad
    with pytest.raises(ValueError, match=r"non-finite|float pixels must be in"):
        enhance_array(identity_net, pixels, tile=None)


def test_non_finite_light_map_refused(identity_net: EnhancementNet) -> None:
    with torch.no_grad():
        identity_net.cond_add1.bias.fill_(float("inf"))
    with pytest.raises(ValueError, match="light map is not finite"):
        enhance_array(identity_net, _image(), tile=16)


def test_light_map_nowhere_positive_refused(identity_net: EnhancementNet) -> None:
    with torch.no_grad():
        identity_net.cond_add1.bias.fill_(-1.0)  # after the ReLU: zero everywhere
    with pytest.raises(ValueError, match="zero or negative everywhere"):
        enhance_array(identity_net, (_image() * 255).astype(np.uint8), tile=16)


def _state(net: EnhancementNet) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in net.state_dict().items()}


def test_checkpoint_with_nan_weight_refused(identity_net: EnhancementNet) -> None:
    state = _state(identity_net)
    build_enhancer(state)  # the healthy weights load
    name = next(name for name in state if name.endswith("weight"))
    state[name].view(-1)[3] = float("nan")
    with pytest.raises(CheckpointError, match=f"weight {name} holds NaN or infinite values"):
        build_enhancer(state)


def test_checkpoint_with_all_zero_weights_refused(identity_net: EnhancementNet) -> None:
    state = {
        name: torch.zeros_like(tensor) if tensor.ndim >= 2 else tensor
        for name, tensor in _state(identity_net).items()
    }
    with pytest.raises(CheckpointError, match="every convolution weight is zero"):
        build_enhancer(state)


def test_cli_refuses_nan_checkpoint_in_one_line(
    tmp_path: Path, monkeypatch, identity_net: EnhancementNet
) -> None:
    from PIL import Image
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    state = _state(identity_net)
    state["cond_add1.weight"].fill_(float("nan"))
    save_file(state, "broken.safetensors")
    Image.fromarray((_image() * 255).astype(np.uint8)).save("a.png")
    result = CliRunner().invoke(
        main, ["enhance", "a.png", "--model", "broken.safetensors", "--device", "cpu"]
    )
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: --model broken.safetensors: broken.safetensors: weight cond_add1.weight holds "
        "NaN or infinite values"
    ]
    assert not Path("enhanced/a.png").exists()
