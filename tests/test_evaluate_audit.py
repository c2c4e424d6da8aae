"""Audit of ``rave evaluate`` and rave.evaluation: odd inputs, re-runs, interrupts, messages.

Each test names the defect it pins. References are closed forms or independent code
(NumPy, OpenCV, Pillow), never numbers copied from the evaluator.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner
from PIL import Image

from rave.cli import main
from rave.evaluation import paired, runner
from rave.evaluation.imread import ImageReadError, read_image
from rave.evaluation.runner import evaluate_folders
from rave.io import PhotoError, PhotoNotFoundError


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["evaluate", *args], catch_exceptions=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _textured(height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    """``(H, W, 3)`` uint8 noise in [20, 230] (offsets of a few levels never clip)."""
    rng = np.random.default_rng(seed)
    return rng.integers(20, 231, (height, width, 3), dtype=np.uint8)


def _save(folder: Path, name: str, pixels: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / name)
    return folder / name


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Path]:
    """gt/ and pred/ (gt + 4 levels), stems s0 and s1, 40x56 pixels."""
    for seed in range(2):
        gt = _textured(seed=seed)
        _save(tmp_path / "gt", f"s{seed}.png", gt)
        _save(tmp_path / "pred", f"s{seed}.png", gt + np.uint8(4))
    return {"gt": tmp_path / "gt", "pred": tmp_path / "pred"}


# --- reading -------------------------------------------------------------------------------


def test_the_evaluator_raises_the_packages_one_read_error(tmp_path: Path) -> None:
    """Was a second exception class wrapping rave.io's PhotoError (one concept, two types):
    ``except rave.io.PhotoError`` or ``except FileNotFoundError`` missed the evaluator's."""
    assert ImageReadError is PhotoError
    with pytest.raises(PhotoNotFoundError, match=r"missing\.png: no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.png")


def test_a_float_tiff_prediction_is_scored(tmp_path: Path) -> None:
    """rave.io reads float TIFFs (samples in [0, 1]); the evaluator refused them with
    "unsupported pixel layout (H, W, 3) float32"."""
    gt = _textured()
    _save(tmp_path / "gt", "s.png", gt)
    (tmp_path / "pred").mkdir()
    tifffile.imwrite(
        tmp_path / "pred" / "s.tif", (gt.astype(np.float32) + 4) / 255, photometric="rgb"
    )
    result = evaluate_folders(
        {"m": tmp_path / "pred"}, reference=tmp_path / "gt", use_lpips=False, no_reference=False
    )
    assert result.errors == []
    # a constant offset of 4 levels: PSNR = 20 log10(255 / 4), float32 samples or not
    assert result.records[0]["psnr"] == pytest.approx(20 * math.log10(255 / 4), abs=1e-3)
    assert any("32-bit float" in note for note in result.notes), result.notes
    assert read_image(tmp_path / "pred" / "s.tif").bit_depth == 32


def test_a_dropped_alpha_channel_is_noted(pair: dict[str, Path]) -> None:
    """An RGBA prediction was scored on its colours without a word about its alpha."""
    rgb = np.asarray(Image.open(pair["pred"] / "s0.png"))
    alpha = np.full(rgb.shape[:2], 128, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha])).save(pair["pred"] / "s0.png")
    result = evaluate_folders(
        {"m": pair["pred"]}, reference=pair["gt"], use_lpips=False, no_reference=False
    )
    notes = [note for note in result.notes if "alpha" in note]
    assert len(notes) == 1 and "s0.png" in notes[0], result.notes
    # the colours are what is scored: 4 levels off, as s1
    psnr = {record["image"]: record["psnr"] for record in result.records}
    assert psnr["s0"] == pytest.approx(20 * math.log10(255 / 4), abs=1e-6)


# --- folders ------------------------------------------------------------------------------


def test_sub_folders_beside_images_are_noted(pair: dict[str, Path]) -> None:
    """A folder with images and sub-folders was scored on its top level without a word (the
    sub-folders were only said when the top level held no image)."""
    _save(pair["pred"] / "night", "n0.png", _textured())
    result = evaluate_folders(
        {"m": pair["pred"]}, reference=pair["gt"], use_lpips=False, no_reference=False
    )
    assert len(result.records) == 2
    notes = [note for note in result.notes if "sub-folder" in note]
    assert len(notes) == 1 and "night" in notes[0], result.notes


def test_methods_on_different_images_note_is_worded(pair: dict[str, Path], tmp_path) -> None:
    """The note read "the methods were images_of on different images" (a renamed variable
    had replaced the word "scored")."""
    _save(tmp_path / "other", "s0.png", _textured(seed=0))
    result = evaluate_folders(
        {"a": pair["pred"], "b": tmp_path / "other"},
        reference=pair["gt"],
        use_lpips=False,
        no_reference=False,
        skip_unmatched=True,
    )
    notes = [note for note in result.notes if "different images" in note]
    assert len(notes) == 1 and "images_of" not in notes[0]
    assert notes[0].startswith("the methods were scored on different images")


def test_output_folder_that_is_scored_is_refused(pair: dict[str, Path]) -> None:
    """-o onto a --pred folder wrote grid.jpg among the predictions: an --overwrite re-run
    scored it as an image of the method (or failed on it as unmatched)."""
    for option in ("--pred", "--gt"):
        result = _run(
            "--pred", str(pair["pred"]), "--gt", str(pair["gt"]), "--no-nr", "--no-lpips",
            "-o", str(pair["pred" if option == "--pred" else "gt"]),
        )  # fmt: skip
        assert result.exit_code == 2, result.output
        assert f"is the folder of {option}" in result.output
    assert not (pair["pred"] / "grid.jpg").exists() and not (pair["gt"] / "grid.jpg").exists()


# --- re-runs with --model ------------------------------------------------------------------


def _checkpoint(tmp_path: Path) -> Path:
    import torch

    from rave.network.enhancer import EnhancementNet

    torch.manual_seed(0)
    path = tmp_path / "random.pth"
    torch.save(EnhancementNet().state_dict(), path)
    return path


@pytest.mark.slow  # two runs of a model, about 20 s on two cores
def test_an_overwrite_rerun_scores_only_this_runs_enhanced_images(tmp_path: Path) -> None:
    """With --overwrite, out/enhanced/<model>/ kept the images of the earlier run, and the
    whole folder was scored: an input removed since (or one the model now fails on) was
    still scored, from the stale file, as if this run had produced it."""
    inputs = tmp_path / "inputs"
    for seed in range(2):
        _save(inputs, f"s{seed}.png", _textured(seed=seed))
    checkpoint, out = _checkpoint(tmp_path), tmp_path / "out"
    args = ("--input", str(inputs), "--model", str(checkpoint), "--no-nr", "-o", str(out))
    first = _run(*args)
    assert first.exit_code == 0, first.output
    assert {r["image"] for r in _rows(out / "per_image.csv") if r["method"] == "random"} == {
        "s0",
        "s1",
    }
    (inputs / "s1.png").unlink()
    second = _run(*args, "--overwrite")
    assert second.exit_code == 0, second.output
    scored = {r["image"] for r in _rows(out / "per_image.csv") if r["method"] == "random"}
    assert scored == {"s0"}
    assert "1 file(s) from an earlier run not scored (s1.png)" in second.output


# --- metrics on small images ----------------------------------------------------------------


def test_ssim_on_images_smaller_than_its_window_says_so(tmp_path: Path) -> None:
    """scikit-image's message ("win_size exceeds image extent ... pass win_size explicitly
    ... set channel_axis") was the error line: advice no rave user can follow."""
    small = np.full((8, 9, 3), 0.5)
    with pytest.raises(ValueError, match=r"SSIM needs images of at least 11x11 pixels"):
        paired.ssim(small, small)
    with pytest.raises(ValueError, match=r"at least 7x7 pixels .* got 9x6"):
        paired.ssim_reference(np.random.default_rng(0).random((6, 9)), np.zeros((6, 9)))
    _save(tmp_path / "gt", "t.png", _textured(8, 9))
    _save(tmp_path / "pred", "t.png", _textured(8, 9, seed=1))
    result = evaluate_folders(
        {"m": tmp_path / "pred"},
        reference=tmp_path / "gt",
        protocol="standard",
        use_lpips=False,
        no_reference=False,
    )
    assert len(result.errors) == 1 and "win_size" not in result.errors[0]
    assert "t.png: SSIM needs images of at least 11x11 pixels" in result.errors[0]


def test_resize_leaves_the_no_reference_scores_to_the_file(tmp_path: Path) -> None:
    """With --resize, the no-reference and exposure scores were computed on the prediction
    resized to its reference's size, not on the file: here a file with half its rows white
    (clipped 0.5) scored clipped 0 once averaged into grey."""
    stripes = np.zeros((80, 100, 3), np.uint8)
    stripes[::2] = 255
    _save(tmp_path / "pred", "s.png", stripes)
    _save(tmp_path / "gt", "s.png", np.full((40, 50, 3), 128, np.uint8))
    result = evaluate_folders(
        {"m": tmp_path / "pred"},
        reference=tmp_path / "gt",
        protocol="standard",
        use_lpips=False,
        no_reference=False,
        resize=True,
    )
    assert result.errors == [], result.errors
    record = result.records[0]
    assert record["clipped"] == 0.5  # rows 0, 2, 4...: max channel 1.0 >= 0.99
    assert record["mean_luma"] == pytest.approx(0.5, abs=1e-9)
    # the paired scores see the resized prediction: every 2x2 block averages to 127.5
    assert record["psnr"] > 40


def test_an_undefined_reference_ssim_is_a_note_not_a_log_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A flat prediction's undefined SSIM was said twice: as a note naming the file and as a
    logged warning that names no file (printed even with -q)."""
    _save(tmp_path / "gt", "f.png", _textured())
    _save(tmp_path / "pred", "f.png", np.full((40, 56, 3), 90, np.uint8))
    with caplog.at_level(logging.WARNING):
        result = evaluate_folders(
            {"m": tmp_path / "pred"},
            reference=tmp_path / "gt",
            protocol="reference",
            use_lpips=False,
            no_reference=False,
        )
    assert math.isnan(result.records[0]["ssim_ref"])
    assert any("f.png: SSIM ref undefined" in note for note in result.notes)
    assert [r for r in caplog.records if r.name == paired.logger.name] == []
    # the library function itself still warns its direct callers
    with caplog.at_level(logging.WARNING):
        paired.ssim_reference(np.full((20, 20), 0.3), np.random.default_rng(0).random((20, 20)))
    assert any(r.name == paired.logger.name for r in caplog.records)


# --- terminal and interrupts ---------------------------------------------------------------


def test_file_names_in_notes_cannot_drive_the_terminal(tmp_path: Path) -> None:
    """Notes quoted file names raw: a name holding an escape sequence reached the terminal."""
    name = "evil\x1b[2J.png"
    gt = _textured()
    _save(tmp_path / "gt", name, gt)
    _save(tmp_path / "pred", name, np.asarray(Image.fromarray(gt).convert("L")))  # grey: a note
    result = _run(
        "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--no-nr", "--no-lpips"
    )
    assert result.exit_code == 0, result.output
    assert "grey and colour files compared" in result.output
    assert "\x1b" not in result.output and "evil\\x1b[2J.png" in result.output


@pytest.mark.parametrize(
    ("interrupt", "status"),
    [(KeyboardInterrupt(), 130), (None, 143)],  # None: a SIGTERM
)
def test_an_interrupt_exits_130_or_143_and_writes_no_report(
    pair: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    interrupt: BaseException | None,
    status: int,
) -> None:
    """Ctrl-C printed click's "Aborted!" and exited 1 (as an image failure does); SIGTERM
    killed the process without a word. rave's commands exit 130 / 143 and say so."""

    def interrupted(*args: object, **kwargs: object) -> None:
        if interrupt is not None:
            raise interrupt
        # a real SIGTERM, once rave evaluate has a handler for it (else it would end pytest)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler), "rave evaluate leaves SIGTERM to its default: killed"
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("the handler did not interrupt")

    monkeypatch.setattr(runner, "evaluate_folders", interrupted)
    out = tmp_path / "out"
    result = _run("--pred", str(pair["pred"]), "--gt", str(pair["gt"]), "-o", str(out))
    assert result.exit_code == status, result.output
    assert "interrupted: no report written" in result.output
    assert "Aborted" not in result.output
    assert not (out / "metrics.csv").exists()


# --- the metrics' input contract ------------------------------------------------------------


@pytest.mark.parametrize(
    "metric",
    [
        paired.psnr, paired.psnr_y, paired.ssim, paired.ssim_y,
        paired.psnr_reference, paired.ssim_reference,
    ],
)  # fmt: skip
def test_float_images_on_the_0_255_scale_are_refused(metric) -> None:
    """Floats in [0, 255] (a common slip) were scored on the wrong scale without a word:
    standard PSNR about 48 dB too low, SSIM with meaningless constants, and the reference
    protocol clipped everything to white."""
    target = _textured().astype(np.float64)
    with pytest.raises(ValueError, match=r"expected float samples in \[0, 1\].*255"):
        metric(target + 4, target)
    nan = target / 255
    nan[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match=r"NaN"):
        metric(nan, target / 255)


def test_no_reference_metrics_refuse_the_0_255_scale_too() -> None:
    """NIQE and BRISQUE clipped a [0, 255] float image to white before scoring it."""
    from rave.metrics import brisque, niqe

    image = np.random.default_rng(0).uniform(0, 255, (200, 200, 3))
    for metric in (niqe, brisque):
        with pytest.raises(ValueError, match=r"expected float samples in \[0, 1\]"):
            metric(image)


def test_16_bit_arrays_are_scored_as_their_8_bit_values() -> None:
    """uint16 arrays (what rave.io.read_photo returns for 16-bit files) were a TypeError;
    v * 257 must score as the 8-bit value v (closed forms: PSNR of a 4-level offset)."""
    target = _textured()
    pred = target + np.uint8(4)
    deep_pred, deep_target = pred.astype(np.uint16) * 257, target.astype(np.uint16) * 257
    expected = 20 * math.log10(255 / 4)
    assert paired.psnr(deep_pred, deep_target) == pytest.approx(expected, abs=1e-9)
    # the reference protocol's grey rounds each level to itself, so it sees the 8-bit files
    assert paired.psnr_reference(deep_pred, deep_target) == paired.psnr_reference(pred, target)
    np.testing.assert_array_equal(paired.to_uint8(deep_pred), pred)


def test_a_black_prediction_is_scored_with_no_reference_metrics_said_undefined(
    tmp_path: Path,
) -> None:
    """A black frame (what a broken model writes) was an error for the whole image,
    "float division by zero" from BRISQUE's fit, after NIQE's "SVD did not converge" and a
    screenful of RuntimeWarnings: its exposure statistics were lost with it."""
    import warnings

    _save(tmp_path / "pred", "black.png", np.zeros((200, 300, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # none may reach the terminal
        result = evaluate_folders({"m": tmp_path / "pred"})
    assert result.errors == []
    record = result.records[0]
    assert record["mean_luma"] == 0.0 and record["clipped"] == 0.0  # closed forms
    assert "niqe" not in record and "brisque" not in record
    for metric in ("NIQE", "BRISQUE"):
        assert any(f"black.png: {metric} skipped" in n and "flat" in n for n in result.notes)


def test_summary_json_counts_images_as_integers(pair: dict[str, Path], tmp_path: Path) -> None:
    """summary.json wrote n_images as 2.0 (a float), metrics.csv as 2."""
    import json

    out = tmp_path / "out"
    result = _run(
        "--pred", str(pair["pred"]), "--gt", str(pair["gt"]), "--no-nr", "--no-lpips",
        "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads((out / "summary.json").read_text())
    summary = document["summary"]
    assert summary["pred"]["n_images"] == 2 and type(summary["pred"]["n_images"]) is int
    assert _rows(out / "metrics.csv")[0]["n_images"] == "2"


def test_an_unreadable_input_costs_only_the_scores_that_need_it(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    """A corrupt --input file dropped its prediction's record, paired scores included (the
    shadow lift needs the input, PSNR does not), and the method's means were then over a
    different set of images than the others'."""
    inputs = tmp_path / "inputs"
    _save(inputs, "s1.png", _textured(seed=1) // 2)
    (inputs / "s0.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    result = evaluate_folders(
        {"m": pair["pred"]},
        reference=pair["gt"],
        inputs=inputs,
        use_lpips=False,
        no_reference=False,
    )
    scored = {r["image"]: r for r in result.records if r["method"] == "m"}
    assert set(scored) == {"s0", "s1"}
    expected = 20 * math.log10(255 / 4)  # both predictions are their reference + 4 levels
    assert all(r["psnr"] == pytest.approx(expected, abs=1e-6) for r in scored.values())
    assert "shadow_mean_lift" not in scored["s0"] and "shadow_mean_lift" in scored["s1"]
    assert len(result.errors) == 1 and str(inputs / "s0.png") in result.errors[0]


def test_quiet_still_shows_the_reference_matchings_warnings(tmp_path: Path) -> None:
    """-q promises "errors, warnings and results are still shown", but --match reference's
    warnings (a prediction scored against a file whose name merely contains its own) were
    notes, hidden by -q."""
    gt = _textured()
    _save(tmp_path / "gt", "1152.png", gt)
    _save(tmp_path / "pred", "152.png", gt)
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--no-nr"]
    result = _run(*args, "--no-lpips", "--match", "reference", "-q")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "152.png scored against 1152.png" in warnings[0]
    assert "note:" not in result.output


def test_a_report_that_cannot_be_written_is_one_error_line(
    pair: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk while writing the report escaped as a traceback (OSError from
    atomic_write, naming nothing the user asked for)."""
    import errno

    from rave.evaluation import report

    def full(path: Path, data: bytes) -> None:
        if path.name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path.parent / ".tmp"))
        path.write_bytes(data)

    monkeypatch.setattr(report, "atomic_write", full)
    out = tmp_path / "out"
    args = ["--pred", str(pair["pred"]), "--gt", str(pair["gt"]), "--no-nr", "--no-lpips"]
    result = _run(*args, "-o", str(out))
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if "summary.json" in line]
    assert lines == [
        f"Error: cannot write {out / 'summary.json'} (no space left on device); "
        f"the report in {out} is incomplete"
    ]
    assert "Traceback" not in result.output


def test_a_file_name_that_is_not_utf8_is_escaped_in_the_report(tmp_path: Path) -> None:
    """A file name with a byte that is not UTF-8 (Linux allows any bytes) crashed the report
    with UnicodeEncodeError ("surrogates not allowed") after every image had been scored."""
    import json
    import os

    name = os.fsdecode(b"\xff\xfe.png")
    gt = _textured()
    try:
        _save(tmp_path / "gt", name, gt)
    except (OSError, UnicodeError):  # a file system that takes UTF-8 names only
        pytest.skip("this file system refuses a name that is not UTF-8")
    _save(tmp_path / "pred", name, gt + np.uint8(4))
    out = tmp_path / "out"
    args = ["--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"), "--no-nr"]
    result = _run(*args, "--no-lpips", "-o", str(out))
    assert result.exit_code == 0, result.output
    rows = _rows(out / "per_image.csv")
    assert [row["image"] for row in rows] == ["\\xff\\xfe"]
    assert float(rows[0]["psnr"]) == pytest.approx(20 * math.log10(255 / 4), abs=1e-6)
    assert "\\xff\\xfe" in (out / "report.html").read_text(encoding="utf-8")
    json.loads((out / "summary.json").read_text(encoding="utf-8"))


def test_an_interrupt_while_a_model_loads_exits_130(
    pair: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while --model loaded (or downloaded) a model gave click's "Aborted!", exit 1."""
    import rave.session

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(rave.session, "Enhancer", interrupted)
    out = tmp_path / "out"
    result = _run("--input", str(pair["pred"]), "--model", "rave-unpaired", "-o", str(out))
    assert result.exit_code == 130, result.output
    assert "interrupted: no report written" in result.output and "Aborted" not in result.output


def test_metric_memory_is_bounded_by_a_strip_not_the_photo(monkeypatch: pytest.MonkeyPatch) -> None:
    """PSNR, SSIM and the exposure statistics held several float64 copies of the whole
    photo (PSNR 6x the float32 image, shadow lift 7x, chroma shift 15x: 1 GB for one 12 MP
    pair in shadow lift alone); they now convert strip by strip. Strips are made small here
    so that a 1 MP image shows it; the bounds are far from both sides."""
    import tracemalloc

    from rave.evaluation import exposure

    monkeypatch.setattr(paired, "_SSIM_STRIP_PIXELS", 1 << 14)
    monkeypatch.setattr(exposure, "_STRIP_PIXELS", 1 << 14, raising=False)
    rng = np.random.default_rng(0)
    target = rng.random((1000, 1000, 3), dtype=np.float32)
    pred = (target * np.float32(0.9)).astype(np.float32)
    bounds = {  # peak / image bytes: (before, after) measured 6.0/0.25, 5.5/1.7, 3.3/0.6...
        "psnr": (paired.psnr, 2.0),
        "ssim": (paired.ssim, 3.0),
        "ssim_y": (paired.ssim_y, 2.0),
        "shadow_lift": (exposure.shadow_lift, 4.5),  # 6.8 / 2.6: two float64 luma planes
        "exposure_stats": (lambda p, t: exposure.exposure_stats(p), 2.5),  # 3.4 / 1.4
        "chroma_shift": (exposure.chroma_shift, 2.0),  # 14.8 / 0.2
    }
    for name, (metric, bound) in bounds.items():
        tracemalloc.start()
        try:
            metric(pred, target)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < bound * target.nbytes, (name, peak / target.nbytes)


def test_stems_that_differ_only_in_case_are_pointed_out(pair: dict[str, Path]) -> None:
    """IMG_1.png against img_1.png was reported as two unmatched files without saying why;
    stems are matched exactly (as Linux compares file names), so the error now says it."""
    (pair["pred"] / "s1.png").rename(pair["pred"] / "S1.png")
    with pytest.raises(runner.EvaluationError, match=r"differ only in case: S1 / s1$"):
        evaluate_folders({"m": pair["pred"]}, reference=pair["gt"], use_lpips=False)


def test_summary_json_names_the_rave_version(pair: dict[str, Path], tmp_path: Path) -> None:
    """summary.json did not say which rave made its numbers (definitions change: see the
    metric fixes of this audit), so a report could not be tied to its code."""
    import json

    import rave

    out = tmp_path / "out"
    args = ["--pred", str(pair["pred"]), "--no-nr", "--no-lpips", "-o", str(out)]
    assert _run(*args).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["rave_version"] == rave.__version__


def test_the_input_row_is_scored_against_the_references(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    """With --gt and --input, the "input" row (a paper table's score of doing nothing) had
    no paired scores: its PSNR/SSIM columns were empty."""
    inputs = tmp_path / "inputs"
    for seed in range(2):
        _save(inputs, f"s{seed}.png", _textured(seed=seed) - np.uint8(8))  # >= 12: no clipping
    _save(inputs, "extra.png", _textured(seed=5))  # no reference: scored without one
    result = evaluate_folders(
        {"m": pair["pred"]},
        reference=pair["gt"],
        inputs=inputs,
        use_lpips=False,
        no_reference=False,
    )
    assert result.errors == []
    rows = {r["image"]: r for r in result.records if r["method"] == "input"}
    for stem in ("s0", "s1"):
        assert rows[stem]["psnr"] == pytest.approx(20 * math.log10(255 / 8), abs=1e-6)
        assert rows[stem]["psnr_ref"] == pytest.approx(20 * math.log10(255 / 8), abs=1e-6)
    assert "psnr" not in rows["extra"] and "mean_luma" in rows["extra"]
    summary = result.summary()
    assert summary["input"]["psnr"] == pytest.approx(20 * math.log10(255 / 8), abs=1e-6)
    assert summary["m"]["psnr"] == pytest.approx(20 * math.log10(255 / 4), abs=1e-6)


def test_report_columns_are_one_method_all_the_way_down(
    pair: dict[str, Path], tmp_path: Path
) -> None:
    """A row lacking an image (unmatched, failed, no input) closed up its cells, so the next
    method moved into the column of the one before: in grid.jpg, whose cells have no
    borders, method B's image sat under method A's."""
    import re

    _save(tmp_path / "b", "s0.png", _textured(seed=0))  # b has s0 only
    inputs = tmp_path / "inputs"
    _save(inputs, "s0.png", _textured(seed=0) // 2)  # and the input of s0 only
    out = tmp_path / "out"
    result = _run(
        "--pred", str(pair["pred"]), "--pred", str(tmp_path / "b"), "--name", "a", "--name",
        "b", "--gt", str(pair["gt"]), "--input", str(inputs), "--skip-unmatched", "--no-nr",
        "--no-lpips", "-o", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    html = (out / "report.html").read_text()
    rows = re.findall(r"<h3>(\w+)</h3><div class='row'>(.*?)</div>", html)
    assert {stem for stem, _ in rows} == {"s0", "s1"}
    for _, cells in rows:
        titles = re.findall(r"<figcaption><b>([^<]*)</b>", cells)
        assert titles == ["input", "reference", "a", "b"], titles
    s1 = dict(rows)["s1"]
    assert s1.count("<img") == 2 and s1.count("no image") == 2  # reference and a only


def test_reference_protocol_equals_the_authors_pipeline_on_odd_8_bit_files(
    tmp_path: Path,
) -> None:
    """Check, not a fix: for 8-bit grey, RGBA and palette PNGs, psnr_ref and ssim_ref are
    what the authors' script computes from the files (cv2.imread, RGB2GRAY on BGR data,
    cv2.PSNR, scikit-image SSIM with the enhanced image's range)."""
    import cv2
    from skimage.metrics import structural_similarity

    gt = _textured(48, 64)
    noise = np.random.default_rng(1).integers(-9, 10, gt.shape)
    pred = np.clip(gt.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    files = {
        "grey": Image.fromarray(pred).convert("L"),
        "rgba": Image.fromarray(np.dstack([pred, np.full(pred.shape[:2], 77, np.uint8)])),
        "palette": Image.fromarray(pred).quantize(64),
    }
    for stem, picture in files.items():
        _save(tmp_path / "gt", f"{stem}.png", gt)
        (tmp_path / "pred").mkdir(exist_ok=True)
        picture.save(tmp_path / "pred" / f"{stem}.png")
    result = evaluate_folders(
        {"m": tmp_path / "pred"},
        reference=tmp_path / "gt",
        protocol="reference",
        use_lpips=False,
        no_reference=False,
    )
    assert result.errors == []
    for record in result.records:
        theirs = [
            cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_RGB2GRAY)
            for path in (record["path"], record["reference"])
        ]
        enhanced, truth = theirs
        assert record["psnr_ref"] == pytest.approx(cv2.PSNR(truth, enhanced, 255.0), abs=1e-9)
        data_range = float(enhanced.max()) - float(enhanced.min())
        expected = structural_similarity(truth, enhanced, data_range=data_range)
        assert record["ssim_ref"] == pytest.approx(expected, abs=1e-9), record["image"]
