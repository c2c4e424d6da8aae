"""What a new user walking through the README found: each test pins one fix."""

from __future__ import annotations

import importlib.abc
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image


class _CtrlCOnImport(importlib.abc.MetaPathFinder):
    """Raises KeyboardInterrupt when ``name`` is imported: Ctrl-C while Python loads it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname == self.name:
            raise KeyboardInterrupt


def test_ctrl_c_while_the_console_script_imports_its_helpers_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """README: Ctrl-C exits 130 with one line. ``rave enhance`` interrupted in its first
    half second (importing rave.cli._batch, which loads NumPy and Pillow) printed a
    KeyboardInterrupt traceback instead."""
    from rave.cli import run

    monkeypatch.delitem(sys.modules, "rave.cli._batch", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_CtrlCOnImport("rave.cli._batch"), *sys.meta_path])
    try:
        with pytest.raises(SystemExit) as stop:
            run(["enhance", "photo.jpg"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C while rave starts escaped as a traceback")
    assert stop.value.code == 130
    assert capsys.readouterr().err == "rave enhance: interrupted while starting: nothing was done\n"


def test_a_format_pillow_reads_but_rave_does_not_write_gets_its_note() -> None:
    """README: formats rave does not write come out as PNG "with a note". A named .ico (read
    by Pillow, outside the folder-scan list) was written as PNG without one."""
    from rave.io.formats import default_output_note

    assert default_output_note(".ico") == "ICO input written as PNG (rave does not write ICO)"
    assert default_output_note(".PCX") == "PCX input written as PNG (rave does not write PCX)"
    assert default_output_note(".gif") == "GIF input written as PNG (rave does not write GIF)"
    assert default_output_note(".jpg") is None  # written as itself
    assert default_output_note(".part") is None  # no format of that name
    assert default_output_note("") is None


def test_rave_enhance_names_the_png_it_writes_for_an_ico(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rave.cli import main

    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 24), (40, 60, 80)).save("icon.ico", sizes=[(32, 24)])
    result = CliRunner().invoke(main, ["enhance", "icon.ico", "-o", "out", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "icon.png").is_file()
    assert "note: icon.ico: ICO input written as PNG (rave does not write ICO)" in result.output


def test_rave_shift_refuses_other_weights_before_encoding_the_vocabulary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """README: rave shift refuses a residual made with other weights under the same name
    (``encoder_sha256``). It did, but only after encoding the vocabulary (about 12 minutes
    for ViT-B/32) and printing the tokens it would remove."""
    import torch
    import torch.nn.functional as F

    import rave.guidance.shift
    from _tiny_clip import register_tiny_clip
    from rave.cli import main
    from rave.guidance.residual import ResidualVector, save_residual

    name = register_tiny_clip(tmp_path / "clip_cfg")
    v_w = F.normalize(torch.ones(32), dim=0)
    v_b = F.normalize(torch.arange(32.0), dim=0)
    r = F.normalize(v_w - v_b, dim=0)
    rv = ResidualVector(
        residual=r, threshold=float(v_w @ r), mean_well_lit=v_w, mean_backlit=v_b,
        encoder=name, num_backlit=3, num_well_lit=3, num_skipped=0,
        files_sha256="0" * 64, created="2024-01-01T00:00:00+00:00",
        encoder_sha256="0" * 64,  # not the weights of the encoder of that name
    )  # fmt: skip
    save_residual(rv, tmp_path / "r.pt")

    def no_vocabulary(*args: object, **kwargs: object) -> None:
        raise AssertionError("the vocabulary was encoded before the weights were checked")

    monkeypatch.setattr(rave.guidance.shift, "build_vocabulary", no_vocabulary)
    out = tmp_path / "shifted.pt"
    args = ["shift", str(tmp_path / "r.pt"), "--remove-tokens", "5", "-o", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert "computed with other weights" in result.output
    assert "tokens defining" not in result.output and not out.exists()


@pytest.mark.parametrize(("mode", "straight"), [("RGBa", "RGBA"), ("La", "LA")])
def test_a_premultiplied_pil_image_comes_back_in_its_mode(mode: str, straight: str) -> None:
    """README: PIL images of every mode are taken "and each comes back in its mode" (palette
    images aside). RGBa and La came back as RGBA and LA."""
    import numpy as np

    import rave

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 24, len(straight)), dtype=np.uint8)
    image = Image.fromarray(pixels.squeeze(), straight).convert(mode)
    enhanced = rave.enhance(image, device="cpu")
    assert enhanced.mode == mode and enhanced.size == image.size
    assert rave.enhance(image, device="cpu", strength=0).tobytes() == image.tobytes()


def test_rave_enhance_help_names_every_format_a_folder_scan_picks_up() -> None:
    """The help's (and README's) format list left out TGA and QOI, which folder scans pick
    up and rave reads."""
    from rave.cli import main
    from rave.io.formats import PILLOW_SUFFIXES

    names = dict.fromkeys((".jpg", ".jpeg", ".jpe", ".jfif"), "JPEG")
    names |= dict.fromkeys((".jp2", ".j2k", ".jpx"), "JPEG 2000")
    names |= dict.fromkeys((".ppm", ".pgm", ".pbm"), "PNM") | {".tif": "TIFF"}
    help_text = " ".join(CliRunner().invoke(main, ["enhance", "--help"]).output.split())
    formats = help_text.split("Formats: ", 1)[1].split(";", 1)[0]
    for suffix in sorted(PILLOW_SUFFIXES):
        name = names.get(suffix, suffix.lstrip(".").upper())
        assert name.upper() in formats.upper(), (suffix, formats)
