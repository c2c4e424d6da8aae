"""Residual files record the weights of their encoder, and are refused with other weights.

A name does not pin weights: ``clip:ARCH@/path/weights.pt`` after the file was replaced, or
a stub/fine-tuned encoder under a registry name. ``ImageEncoder.weights_sha256`` fingerprints
what an embedding depends on; a residual file records it and ``check_encoder`` compares it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from torch import Tensor, nn

from _tiny_clip import register_tiny_clip
from rave.cli import main
from rave.encoders import create_encoder
from rave.encoders.base import ImageEncoder, ResizeMode
from rave.guidance.residual import check_encoder, compute_residual, load_residual, save_residual


class LinearEncoder(ImageEncoder):
    """``normalize(W @ channel means)`` with explicit weights."""

    def __init__(self, weight: Tensor, name: str = "stub:linear") -> None:
        super().__init__()
        self.name = name
        self.embed_dim = weight.shape[0]
        self.input_size = 8
        self.project = nn.Linear(3, weight.shape[0], bias=False)
        with torch.no_grad():
            self.project.weight.copy_(weight)

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        return F.normalize(self.project(self.preprocess(images, resize).mean(dim=(2, 3))), dim=1)

    def features(self, images: Tensor) -> list[Tensor]:
        return [self.preprocess(images, "squash")]


WEIGHT = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]])


def _folders(tmp_path: Path) -> tuple[Path, Path]:
    for name, colours in (("backlit", [(20, 10, 5), (5, 10, 20)]), ("well", [(200, 180, 90)])):
        (tmp_path / name).mkdir()
        for i, colour in enumerate(colours):
            Image.new("RGB", (9, 7), colour).save(tmp_path / name / f"{i}.png")
    return tmp_path / "backlit", tmp_path / "well"


def test_the_fingerprint_follows_weights_and_preprocessing_not_the_object() -> None:
    base = LinearEncoder(WEIGHT).weights_sha256()
    assert LinearEncoder(WEIGHT.clone(), name="another:name").weights_sha256() == base
    changed = WEIGHT.clone()
    changed[3, 2] = 0.5000001  # one weight, one ulp-sized change
    assert LinearEncoder(changed).weights_sha256() != base
    shifted_mean = LinearEncoder(WEIGHT)
    shifted_mean.mean = (0.1, 0.0, 0.0)
    assert shifted_mean.weights_sha256() != base
    blurred = LinearEncoder(WEIGHT)
    blurred.blur_sigma = 1.0
    assert blurred.weights_sha256() != base


def test_clip_fingerprint_is_the_image_tower_only(tmp_path: Path) -> None:
    encoder = create_encoder(register_tiny_clip(tmp_path / "clip"))
    before = encoder.weights_sha256()
    with torch.no_grad():
        encoder.model.token_embedding.weight.add_(1.0)  # text tower: not in a residual
    assert encoder.weights_sha256() == before
    with torch.no_grad():
        next(encoder.model.visual.parameters()).add_(1.0)
    assert encoder.weights_sha256() != before


def test_a_residual_is_refused_with_other_weights_under_the_same_name(tmp_path: Path) -> None:
    backlit, well = _folders(tmp_path)
    rv = compute_residual(backlit, well, LinearEncoder(WEIGHT), progress=False)
    path = save_residual(rv, tmp_path / "r.pt")
    loaded = load_residual(path)
    assert loaded.encoder_sha256 == LinearEncoder(WEIGHT).weights_sha256() != ""
    check_encoder(loaded, LinearEncoder(WEIGHT))  # the same weights: accepted
    check_encoder(loaded, LinearEncoder(WEIGHT, name="stub:renamed"))  # same weights, any name
    other = WEIGHT.flip(0)
    with pytest.raises(ValueError, match="other weights") as caught:
        check_encoder(loaded, LinearEncoder(other))
    assert "\n" not in str(caught.value) and "stub:linear" in str(caught.value)
    # a name alone is still checked by name
    check_encoder(loaded, "stub:linear")
    with pytest.raises(ValueError, match="computed with encoder"):
        check_encoder(loaded, "stub:other")


def test_files_without_the_fingerprint_are_checked_by_name(tmp_path: Path) -> None:
    backlit, well = _folders(tmp_path)
    rv = compute_residual(backlit, well, LinearEncoder(WEIGHT), progress=False)
    payload = torch.load(save_residual(rv, tmp_path / "r.pt"), weights_only=True)
    del payload["encoder_sha256"]  # as written before it was recorded
    torch.save(payload, tmp_path / "old.pt")
    old = load_residual(tmp_path / "old.pt")
    assert old.encoder_sha256 == ""
    check_encoder(old, LinearEncoder(WEIGHT.flip(0)))  # nothing to compare the weights with
    with pytest.raises(ValueError, match="computed with encoder"):
        check_encoder(old, LinearEncoder(WEIGHT, name="stub:other"))


def test_rave_interpret_refuses_a_residual_of_other_clip_weights(tmp_path: Path) -> None:
    name = register_tiny_clip(tmp_path / "clip")
    backlit, well = _folders(tmp_path)
    encoder = create_encoder(name)
    rv = compute_residual(backlit, well, encoder, progress=False)
    with torch.no_grad():
        next(encoder.model.visual.parameters()).add_(1.0)
    # the file claims weights this encoder name does not load (as after a replaced file)
    rv_other = compute_residual(backlit, well, encoder, progress=False)
    save_residual(rv, tmp_path / "same.pt")
    save_residual(rv_other, tmp_path / "other.pt")
    runner = CliRunner()
    result = runner.invoke(
        main, ["interpret", str(tmp_path / "other.pt"), "--vocab-limit", "40", "--top", "3"]
    )
    assert result.exit_code != 0
    assert "other weights" in result.output
    result = runner.invoke(
        main, ["interpret", str(tmp_path / "same.pt"), "--vocab-limit", "40", "--top", "3"]
    )
    assert result.exit_code == 0, result.output
