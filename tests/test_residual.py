"""The residual vector: closed-form arithmetic, the file format, bad input and the CLI."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import Tensor, nn

from _cli_errors import one_error_line
from rave.encoders.base import ImageEncoder, ResizeMode
from rave.guidance import (
    ResidualVector,
    check_encoder,
    compute_residual,
    load_residual,
    save_residual,
)
from rave.guidance.residual import read_image


class ColourEncoder(ImageEncoder):
    """A stub whose embedding is known in closed form: normalize([R, G, B, 0.5]).

    R, G, B are the image's channel means, so a flat-coloured image embeds to a vector that
    the tests compute with numpy from the colour alone.
    """

    def __init__(self, name: str = "stub:colour") -> None:
        super().__init__()
        self.name = name
        self.embed_dim = 4
        self.input_size = 8
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        x = self.preprocess(images, resize)
        colour = x.mean(dim=(2, 3)) * self.scale
        const = torch.full_like(colour[:, :1], 0.5)
        return nn.functional.normalize(torch.cat([colour, const], dim=1), dim=1)

    def features(self, images: Tensor) -> list[Tensor]:
        return [self.preprocess(images, "squash")]


def _flat_images(folder: Path, colours: list[tuple[int, int, int]], size=(20, 12)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", size, colour).save(folder / f"img{i:02d}.png")


def _expected(backlit: list, well_lit: list) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """docs/method.md ("The residual vector") in numpy, for flat colours under ColourEncoder."""

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def embed(colours: list) -> np.ndarray:
        rgb = np.asarray(colours, np.float64) / 255.0
        return unit(np.concatenate([rgb, np.full((len(colours), 1), 0.5)], axis=1))

    v_b = unit(embed(backlit).mean(axis=0))
    v_w = unit(embed(well_lit).mean(axis=0))
    r = unit(v_w - v_b)
    return r, float(v_w @ r), v_w, v_b


DARK = [(10, 12, 30), (40, 20, 5), (25, 25, 25)]
BRIGHT = [(200, 180, 160), (240, 250, 255), (120, 200, 90), (180, 60, 220)]


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    _flat_images(tmp_path / "backlit", DARK)
    _flat_images(tmp_path / "well_lit", BRIGHT, size=(9, 31))
    return tmp_path / "backlit", tmp_path / "well_lit"


@pytest.fixture()
def rv(folders) -> ResidualVector:
    return compute_residual(*folders, ColourEncoder(), batch_size=2, progress=False)


def test_matches_closed_form(rv: ResidualVector) -> None:
    r, thr, v_w, v_b = _expected(DARK, BRIGHT)
    np.testing.assert_allclose(rv.residual.numpy(), r, atol=1e-6)
    np.testing.assert_allclose(rv.mean_well_lit.numpy(), v_w, atol=1e-6)
    np.testing.assert_allclose(rv.mean_backlit.numpy(), v_b, atol=1e-6)
    assert rv.threshold == pytest.approx(thr, abs=1e-6)
    assert (rv.num_backlit, rv.num_well_lit, rv.num_skipped) == (3, 4, 0)
    assert rv.encoder == "stub:colour"


def test_unit_norms_and_threshold_identity(rv: ResidualVector) -> None:
    for v in (rv.residual, rv.mean_well_lit, rv.mean_backlit):
        assert float(v.double().norm()) == pytest.approx(1.0, abs=1e-6)
    # For unit v_w, v_b at cosine c: thr = v_w . (v_w - v_b) / |v_w - v_b| = sqrt((1 - c) / 2).
    assert rv.threshold == pytest.approx(math.sqrt((1 - rv.cos_means) / 2), abs=1e-6)
    # r points from the backlit mean to the well-lit mean.
    assert float(rv.mean_well_lit @ rv.residual) > float(rv.mean_backlit @ rv.residual)


def test_batch_size_does_not_change_the_result(folders, rv: ResidualVector) -> None:
    other = compute_residual(*folders, ColourEncoder(), batch_size=16, progress=False)
    torch.testing.assert_close(other.residual, rv.residual)


def test_file_round_trip_with_weights_only(rv: ResidualVector, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = save_residual(rv, out_dir / "residual.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["residual"].ndim == 1 and raw["residual"].dtype == torch.float32
    assert isinstance(raw["threshold"], float)
    assert raw["encoder"] == "stub:colour"
    assert (raw["num_backlit"], raw["num_well_lit"]) == (3, 4)
    assert len(raw["files_sha256"]) == 64
    from datetime import datetime

    assert datetime.fromisoformat(raw["created"]).tzinfo is not None
    back = load_residual(path)
    assert back.encoder == rv.encoder and back.files_sha256 == rv.files_sha256
    torch.testing.assert_close(back.residual, rv.residual)
    assert back.threshold == rv.threshold
    assert [p.name for p in out_dir.iterdir()] == ["residual.pt"]  # no temp file left


def test_file_hash_depends_on_the_file_list(folders, rv: ResidualVector) -> None:
    backlit, _ = folders
    (backlit / "img00.png").rename(backlit / "renamed.png")
    other = compute_residual(*folders, ColourEncoder(), progress=False)
    assert other.files_sha256 != rv.files_sha256
    torch.testing.assert_close(other.residual, rv.residual)


def test_never_overwrites_unless_asked(rv: ResidualVector, tmp_path: Path) -> None:
    path = tmp_path / "residual.pt"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        save_residual(rv, path)
    assert path.read_bytes() == b"precious"
    save_residual(rv, path, overwrite=True)
    assert load_residual(path).encoder == "stub:colour"


# --- malformed residual files --------------------------------------------------------------


def _payload(rv: ResidualVector, tmp_path: Path) -> dict:
    return torch.load(save_residual(rv, tmp_path / "good.pt"), weights_only=True)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.pop("format"), "not a rave residual file"),
        (lambda p: p.update(version=99), "version"),
        (lambda p: p.update(residual=p["residual"] * 2), "not a unit vector"),
        (lambda p: p.update(residual=p["residual"][None]), "1-D"),
        (lambda p: p.update(mean_backlit=torch.ones(7) / math.sqrt(7)), "has 7 values"),
        (lambda p: p.update(threshold="0.3"), "threshold"),
        (lambda p: p.pop("encoder"), "'encoder' missing"),
        (lambda p: p.update(num_backlit=2.5), "'num_backlit'"),
    ],
)
def test_malformed_files_are_refused(rv, tmp_path: Path, change, message) -> None:
    payload = _payload(rv, tmp_path)
    change(payload)
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=message) as info:
        load_residual(path)
    assert "bad.pt" in str(info.value)


def test_non_residual_files_are_refused(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file")
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        load_residual(garbage)
    listing = tmp_path / "list.pt"
    torch.save([1, 2, 3], listing)
    with pytest.raises(ValueError, match="not a rave residual file"):
        load_residual(listing)
    with pytest.raises(FileNotFoundError):
        load_residual(tmp_path / "absent.pt")


def test_pickled_code_is_not_run(tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "rave-residual", "x": Payload()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt"):
        load_residual(path)
    assert not (tmp_path / "pwned").exists()


# --- encoder check -------------------------------------------------------------------------


def test_check_encoder(rv: ResidualVector) -> None:
    check_encoder(rv, "stub:colour")
    check_encoder(rv, ColourEncoder())
    with pytest.raises(ValueError, match=r"'stub:colour'.*'effnet-lite0'"):
        check_encoder(rv, "effnet-lite0")
    wide = ColourEncoder()
    wide.embed_dim = 8
    with pytest.raises(ValueError, match="dimensions"):
        check_encoder(rv, wide)
    clip_rv = ResidualVector(**{**rv.__dict__, "encoder": "clip:ViT-B-32@openai"})
    check_encoder(clip_rv, "clip:ViT-B-32")  # the default tag is implied
    with pytest.raises(ValueError, match="recompute"):
        check_encoder(clip_rv, "clip:ViT-B-32@laion2b_s34b_b79k")


# --- bad input folders ---------------------------------------------------------------------


def test_empty_and_missing_folders(tmp_path: Path, folders) -> None:
    backlit, well_lit = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"no readable images in .*empty"):
        compute_residual(tmp_path / "empty", well_lit, ColourEncoder(), progress=False)
    with pytest.raises(FileNotFoundError, match="absent"):
        compute_residual(backlit, tmp_path / "absent", ColourEncoder(), progress=False)


def test_unreadable_files_are_skipped_and_counted(folders, rv, caplog) -> None:
    backlit, well_lit = folders
    (backlit / "notes.txt").write_text("not an image")  # not an image name: not listed
    (backlit / "notes.jpg").write_text("not an image")
    (well_lit / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken")
    (well_lit / "empty.png").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        other = compute_residual(*folders, ColourEncoder(), progress=False)
    assert other.num_skipped == 3
    assert (other.num_backlit, other.num_well_lit) == (3, 4)
    torch.testing.assert_close(other.residual, rv.residual)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    for name in ("notes.jpg", "truncated.jpg", "empty.png"):
        assert sum(name in w for w in warnings) == 1
    assert not any("notes.txt" in w for w in warnings)


def test_folder_of_only_non_images(tmp_path: Path, folders) -> None:
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.jpg").write_text("x")
    with pytest.raises(ValueError, match=r"no readable images .*1 files, 1 skipped"):
        compute_residual(junk, folders[1], ColourEncoder(), progress=False)


def test_single_image_works_with_a_warning(tmp_path: Path, caplog) -> None:
    _flat_images(tmp_path / "b", DARK[:1])
    _flat_images(tmp_path / "w", BRIGHT)
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        rv = compute_residual(tmp_path / "b", tmp_path / "w", ColourEncoder(), progress=False)
    expected_r, _, _, _ = _expected(DARK[:1], BRIGHT)
    np.testing.assert_allclose(rv.residual.numpy(), expected_r, atol=1e-6)
    assert any("weak estimate" in record.getMessage() for record in caplog.records)


def test_identical_sets_are_an_error(tmp_path: Path, folders) -> None:
    backlit, _ = folders
    with pytest.raises(ValueError, match="same"):
        compute_residual(backlit, backlit, ColourEncoder(), progress=False)
    _flat_images(tmp_path / "copy", DARK)
    with pytest.raises(ValueError, match="same mean embedding"):
        compute_residual(backlit, tmp_path / "copy", ColourEncoder(), progress=False)


# --- image reading -------------------------------------------------------------------------


def test_read_image_16_bit_and_orientation(tmp_path: Path) -> None:
    import cv2

    rgb = np.zeros((4, 6, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 65535, 32768, 1  # R, G, B
    cv2.imwrite(str(tmp_path / "deep.png"), rgb[..., ::-1])  # OpenCV writes BGR
    x = read_image(tmp_path / "deep.png")
    assert x.shape == (3, 4, 6) and x.dtype == torch.float32
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([1.0, 32768 / 65535, 1 / 65535]))

    # EXIF orientation 6 (rotate 90 degrees clockwise to view): a 6x4 file shows as 4x6.
    image = Image.new("RGB", (6, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_image(tmp_path / "rotated.jpg").shape == (3, 6, 4)

    Image.new("L", (5, 3), 128).save(tmp_path / "grey.png")
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (3, 3, 5) and torch.allclose(grey, torch.full_like(grey, 128 / 255))


# --- command line --------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_with_effnet(folders, tmp_path: Path) -> None:
    from rave.cli import main

    backlit, well_lit = folders
    out = tmp_path / "r.pt"
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(well_lit)]
    args += ["--encoder", "effnet-lite0", "-o", str(out), "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "backlit images   3" in result.output and "well-lit images  4" in result.output
    assert "threshold" in result.output and "cos(v_w, v_b)" in result.output
    rv = load_residual(out)
    assert rv.encoder == "effnet-lite0" and rv.num_backlit == 3
    assert float(rv.residual.norm()) == pytest.approx(1.0, abs=1e-5)


def test_cli_errors_and_overwrite(folders, tmp_path: Path, monkeypatch) -> None:
    import rave.encoders
    from rave.cli import main

    def fake_create_encoder(name: str, **_: object) -> ImageEncoder:
        if name != "stub:colour":
            raise ValueError(f"unknown encoder {name!r}")
        return ColourEncoder()

    monkeypatch.setattr(rave.encoders, "create_encoder", fake_create_encoder)
    backlit, well_lit = folders
    out = tmp_path / "r.pt"
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(well_lit)]
    args += ["--encoder", "stub:colour", "-o", str(out), "--device", "cpu", "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    expected_thr = _expected(DARK, BRIGHT)[1]
    assert f"threshold        {expected_thr:.6f}" in first.output

    out.write_bytes(b"keep me")
    again = CliRunner().invoke(main, args)
    assert again.exit_code != 0 and "--overwrite" in again.output
    assert out.read_bytes() == b"keep me"
    assert CliRunner().invoke(main, [*args, "--overwrite"]).exit_code == 0
    assert load_residual(out).encoder == "stub:colour"

    new_out = ["-o", str(tmp_path / "other.pt")]
    same = CliRunner().invoke(main, [*args[:3], "--well-lit", str(backlit), *args[5:], *new_out])
    assert same.exit_code != 0 and "same" in same.output
    unknown = CliRunner().invoke(main, [*args[:5], "--encoder", "nope", *new_out])
    assert unknown.exit_code != 0 and "unknown encoder 'nope'" in unknown.output
    assert not (tmp_path / "other.pt").exists()


def _stub_cli(monkeypatch, folders, out: Path, create=None):
    """``rave residual`` with the colour stub (or ``create``) as the encoder factory."""
    import rave.encoders
    from rave.cli import main

    monkeypatch.setattr(
        rave.encoders, "create_encoder", create or (lambda name, **_: ColourEncoder())
    )
    backlit, well_lit = folders
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(well_lit)]
    args += ["--encoder", "stub:colour", "-o", str(out), "--device", "cpu", "--quiet"]
    return CliRunner().invoke(main, args)


def test_cli_existing_output_is_a_usage_error(folders, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "r.pt"
    out.write_bytes(b"keep me")
    # exit 2, as rave export and rave shift refuse to replace a file
    assert "--overwrite" in one_error_line(_stub_cli(monkeypatch, folders, out), 2)
    assert out.read_bytes() == b"keep me"


def test_cli_output_is_checked_before_embedding(folders, tmp_path: Path, monkeypatch) -> None:
    def never(name: str, **_: object) -> ImageEncoder:
        raise AssertionError("embedding started before the output was checked")

    (tmp_path / "small.jpg").write_bytes(b"a photo")
    out = tmp_path / "small.jpg" / "r.pt"
    line = one_error_line(_stub_cli(monkeypatch, folders, out, never), 2)
    assert line.endswith(f"{out}: parent {tmp_path / 'small.jpg'} is a file, not a folder")
    if Path("/proc/self").is_dir():
        line = one_error_line(_stub_cli(monkeypatch, folders, Path("/proc/r.pt"), never), 2)
        assert "/proc/r.pt: cannot write in /proc" in line and ".part" not in line
    # missing folders are created, as rave enhance -o and rave export do
    deep = tmp_path / "new" / "sub" / "r.pt"
    assert _stub_cli(monkeypatch, folders, deep).exit_code == 0
    assert load_residual(deep).encoder == "stub:colour"


def test_cli_failed_write_names_the_output(folders, tmp_path: Path, monkeypatch) -> None:
    import errno
    import os

    def read_only(source: str, target: str) -> None:  # the rename of the finished file
        raise OSError(errno.EROFS, "Read-only file system", source)

    monkeypatch.setattr(os, "replace", read_only)
    out = tmp_path / "r.pt"
    line = one_error_line(_stub_cli(monkeypatch, folders, out), 1)
    assert line == f"Error: cannot write {out} (read-only file system)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backlit", "well_lit"]  # no .part


def test_cli_library_root_logging_is_not_printed(folders, tmp_path: Path, monkeypatch) -> None:
    """OpenCLIP logs 'Failed to download' on the root logger before raising: one line only."""

    def offline(name: str, **_: object) -> ImageEncoder:
        logging.error("Failed to download weights for tag 'openai'")
        raise RuntimeError("could not load the 'openai' weights of ViT-B-32")

    # as in a terminal: no handler on the root logger (pytest installs its own)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    result = _stub_cli(monkeypatch, folders, tmp_path / "r.pt", offline)
    assert one_error_line(result, 1) == "Error: could not load the 'openai' weights of ViT-B-32"
    assert "Failed to download" not in result.output and "root" not in result.output
    assert logging.getLogger().handlers == []  # no basicConfig handler left behind


def test_route_library_logging_keeps_rave_messages(monkeypatch, capsys, caplog) -> None:
    from rave.cli import LIBRARY_LOGGER, route_library_logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with route_library_logging():
        logging.warning("from a library")
        logging.getLogger("rave.test").warning("from rave")
    assert capsys.readouterr().err == "from rave\n"  # as Python prints it without handlers
    monkeypatch.undo()
    with caplog.at_level(logging.DEBUG), route_library_logging():
        logging.error("from a library")
    assert [(r.name, r.levelname) for r in caplog.records] == [(LIBRARY_LOGGER, "DEBUG")]


# --- real photos ---------------------------------------------------------------------------


@pytest.mark.slow
def test_effnet_residual_orders_exposures_of_real_photos(photos_dir: Path, tmp_path) -> None:
    """Brightening held-out dim photos moves them along r; darkening well-lit ones, against it.

    An independent property: nothing in the residual code knows about exposure.
    """
    import matplotlib.cbook
    import skimage.data

    from rave.encoders import create_encoder
    from rave.encoders.base import center_crop_resize

    dicm = sorted((photos_dir / "dicm").glob("*.jpg"))
    if len(dicm) < 16:
        pytest.skip(f"expected the DICM photos in {photos_dir / 'dicm'}")
    backlit = tmp_path / "backlit"
    backlit.mkdir()
    for path in dicm[0:16:2]:
        (backlit / path.name).symlink_to(path)
    well_lit = tmp_path / "well_lit"
    well_lit.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(well_lit / f"{name}.png")
    hopper = matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    (well_lit / "hopper.jpg").symlink_to(hopper)

    encoder = create_encoder("effnet-lite0")
    rv = compute_residual(backlit, well_lit, encoder, batch_size=8, progress=False)

    def projections(path: Path, gammas: tuple[float, ...]) -> Tensor:
        x = center_crop_resize(read_image(path)[None], 224)
        with torch.inference_mode():
            return encoder.embed(torch.cat([x.pow(g) for g in gammas])) @ rv.residual

    held_out = [projections(p, (1.0, 0.7, 0.5)) for p in dicm[1:16:4]]
    gains = torch.stack([p[2] - p[0] for p in held_out])
    assert float(gains.mean()) > 0, gains
    assert sum(bool(p[0] < p[1] < p[2]) for p in held_out) >= 3, held_out
    for path in sorted(well_lit.iterdir()):
        p = projections(path, (2.0, 1.0))
        assert float(p[0]) < float(p[1]), (path.name, p)


def test_images_in_sub_folders_are_not_left_out_without_a_word(
    tmp_path: Path, folders, caplog
) -> None:
    """Only the images directly inside a folder are used; a set kept in sub-folders (as
    downloaded datasets often are) is named in a warning, or in the error if nothing else."""
    backlit, well_lit = folders
    _flat_images(backlit / "more", [(9, 9, 9)])
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        other = compute_residual(backlit, well_lit, ColourEncoder(), progress=False)
    assert other.num_backlit == 3  # the sub-folder's image is not used...
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "sub-folder" in w and str(backlit) in w]  # ...and it is said
    nested = tmp_path / "dataset"
    _flat_images(nested / "train", [(200, 200, 200), (190, 180, 170)])
    with pytest.raises(ValueError, match=r"no readable images .*1 sub-folder\(s\) of .*dataset"):
        compute_residual(backlit, nested, ColourEncoder(), progress=False)
