"""``rave evaluate`` and ``rave residual``: one file's failure is one line, the rest goes on.

The failures are injected from outside rave (a library raising on one file), which must be
that file's error; a bug in rave itself (a TypeError raised by rave's own code) must not
be hidden.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

import rave.evaluation.runner as runner
import rave.guidance.residual as residual
from rave.encoders.base import ImageEncoder, ResizeMode
from rave.errors import is_rave_bug


class MeanColourEncoder(ImageEncoder):
    """A stub encoder: the embedding is the normalised mean colour plus a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "stub:mean"
        self.embed_dim = 4
        self.input_size = 8
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        colour = self.preprocess(images, resize).mean(dim=(2, 3))
        return nn.functional.normalize(torch.cat([colour, torch.full_like(colour[:, :1], 0.5)], 1))

    def features(self, images: Tensor) -> list[Tensor]:
        return [self.preprocess(images, "squash")]


def _folder(folder: Path, colours: list[tuple[int, int, int]]) -> None:
    folder.mkdir(parents=True)
    for index, colour in enumerate(colours):
        Image.new("RGB", (20 + index, 12), colour).save(folder / f"img{index}.png")


def test_residual_skips_a_file_a_library_fails_on(tmp_path: Path, monkeypatch, caplog) -> None:
    _folder(tmp_path / "backlit", [(10, 10, 30), (30, 20, 10)])
    _folder(tmp_path / "well_lit", [(200, 180, 160), (120, 200, 90)])
    real_crop = residual.center_crop_resize

    def crop_failing_on_21_wide(image: Tensor, size: int) -> Tensor:
        if image.shape[-1] == 21:
            raise RuntimeError("resampler failed")
        return real_crop(image, size)

    monkeypatch.setattr(residual, "center_crop_resize", crop_failing_on_21_wide)
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        rv = residual.compute_residual(
            tmp_path / "backlit", tmp_path / "well_lit", MeanColourEncoder(), progress=False
        )
    assert (rv.num_backlit, rv.num_well_lit, rv.num_skipped) == (1, 1, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("img1.png: resampler failed" in w for w in warnings) == 2


def test_evaluation_scores_the_rest_when_a_metric_fails_on_one_file(
    tmp_path: Path, monkeypatch
) -> None:
    rng = np.random.default_rng(0)
    pred = tmp_path / "pred"
    pred.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            pred / f"{name}.png"
        )
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
            inputs / f"{name}.png"
        )
    scorer_class = next(
        value
        for value in vars(runner).values()
        if isinstance(value, type) and hasattr(value, "unpaired")
    )
    real_unpaired = scorer_class.unpaired

    def unpaired_failing_on_b(self, image, source, notes):
        if Path(source).stem == "b":
            raise TypeError("metric library failed")
        return real_unpaired(self, image, source, notes)

    monkeypatch.setattr(scorer_class, "unpaired", unpaired_failing_on_b)
    result = runner.evaluate_folders(
        {"method": pred}, inputs=inputs, use_lpips=False, no_reference=False
    )
    assert sorted(result.errors) == [
        f"{inputs / 'b.png'}: TypeError: metric library failed",
        f"{pred / 'b.png'}: TypeError: metric library failed",
    ]
    assert sorted((r["method"], r["image"]) for r in result.records) == [
        ("input", "a"),
        ("method", "a"),
    ]


def test_bug_in_rave_is_not_taken_for_a_file_error(tmp_path: Path, monkeypatch) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.new("RGB", (40, 48), (90, 90, 90)).save(pred / "a.png")
    # rave's own code then calls None: a TypeError raised in runner.py, i.e. a bug.
    monkeypatch.setattr(runner, "read_image", None)
    with pytest.raises(TypeError) as caught:
        runner.evaluate_folders({"method": pred}, use_lpips=False, no_reference=False)
    assert is_rave_bug(caught.value)
    try:
        raise TypeError("raised in a test, outside rave")
    except TypeError as err:
        assert not is_rave_bug(err)
