"""``rave evaluate`` end to end on tiny folders, plus the evaluator's image reader."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from rave.cli import main
from rave.evaluation.imread import ImageReadError, read_image
from rave.evaluation.runner import evaluate_folders

SIZE = (120, 200)  # H, W: NIQE needs two 96x96 blocks


def _photo(seed: int) -> np.ndarray:
    from skimage.data import astronaut

    y, x = 40 + 30 * seed, 60 + 20 * seed
    return (
        30 + astronaut()[y : y + SIZE[0], x : x + SIZE[1]].astype(np.int32) * 180 // 255
    ).astype(np.uint8)


def _save(folder: Path, name: str, image: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    Image.fromarray(image).save(path)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    """gt/, a/ (gt + 4 levels), b/ (gt + 8 levels), inputs/ (darkened gt); stems s0, s1."""
    folders = {name: tmp_path / name for name in ("gt", "a", "b", "inputs")}
    for seed in range(2):
        gt = _photo(seed)
        _save(folders["gt"], f"s{seed}.png", gt)
        _save(folders["a"], f"s{seed}.png", gt + np.uint8(4))
        _save(folders["b"], f"s{seed}.png", gt + np.uint8(8))
        _save(folders["inputs"], f"s{seed}.png", (gt // 3).astype(np.uint8))
    return folders


def _run(*args: str) -> object:
    return CliRunner().invoke(main, ["evaluate", *args], catch_exceptions=False)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_paired_comparison_writes_all_outputs(dataset, tmp_path) -> None:
    out = tmp_path / "out"
    result = _run(
        "--pred", str(dataset["a"]), "--pred", str(dataset["b"]),
        "--name", "plus4", "--name", "plus8",
        "--gt", str(dataset["gt"]), "--input", str(dataset["inputs"]),
        "--no-lpips", "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "plus4" in result.output and "PSNR ref" in result.output
    assert {p.name for p in out.iterdir()} >= {
        "metrics.csv", "per_image.csv", "summary.json", "report.html", "grid.jpg",
    }  # fmt: skip
    summary = {row["method"]: row for row in _rows(out / "metrics.csv")}
    assert set(summary) == {"input", "plus4", "plus8"}
    # Constant offsets of 4 and 8 levels on every channel: closed-form PSNR (no clipping).
    for name, offset in (("plus4", 4), ("plus8", 8)):
        expected = 20 * math.log10(255 / offset)
        assert float(summary[name]["psnr"]) == pytest.approx(expected, abs=1e-6)
        assert float(summary[name]["psnr_ref"]) == pytest.approx(expected, abs=1e-6)
        assert float(summary[name]["shadow_mean_lift"]) > 0
    # adding the same offset to every channel moves colours toward grey, 8 more than 4
    assert float(summary["plus8"]["chroma_shift"]) > float(summary["plus4"]["chroma_shift"]) > 0
    per_image = _rows(out / "per_image.csv")
    assert len(per_image) == 6
    assert all(row["niqe"] for row in per_image)
    document = json.loads((out / "summary.json").read_text())
    assert document["summary"]["plus4"]["n_images"] == 2
    assert "reference" in document["definitions"]
    html = (out / "report.html").read_text()
    assert html.count("<figure>") == 2 * 4  # input, reference, two methods per image
    assert "data:image/jpeg;base64," in html


def test_protocol_selects_columns(dataset, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr"]
    assert _run(*args, "--protocol", "reference", "--out", str(out)).exit_code == 0
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == [
        "method",
        "n_images",
        "psnr_ref",
        "ssim_ref",
        "mean_luma",
        "p10_luma",
        "clipped",
    ]
    assert _run(*args, "--protocol", "standard", "--out", str(out), "--overwrite").exit_code == 0
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[2:6] == ["psnr", "psnr_y", "ssim", "ssim_y"] and "psnr_ref" not in header


def test_existing_report_kept_unless_overwrite(dataset, tmp_path) -> None:
    out = tmp_path / "out"
    args = ["--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr"]
    assert _run(*args, "-o", str(out)).exit_code == 0
    before = (out / "summary.json").read_bytes()
    (out / "summary.json").write_text("{}")  # the user's own edits are not lost
    refused = _run(*args, "-o", str(out))
    assert refused.exit_code == 2
    assert "pass --overwrite" in refused.output and "summary.json" in refused.output
    assert (out / "summary.json").read_text() == "{}"
    assert _run(*args, "-o", str(out), "--overwrite").exit_code == 0
    assert (out / "summary.json").read_bytes() == before


def test_unmatched_files_are_listed(dataset) -> None:
    _save(dataset["a"], "extra.png", _photo(0))
    result = _run("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips")
    assert result.exit_code != 0
    assert "extra.png" in result.output and "--skip-unmatched" in result.output
    result = _run(
        "--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--skip-unmatched"
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "extra.png: no partner" in result.output


def test_size_mismatch_is_an_error_for_that_file_unless_resizing(dataset) -> None:
    _save(dataset["a"], "s1.png", _photo(1)[:, :150])
    result = _run("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    assert result.exit_code == 1
    assert "s1.png" in result.output and "150x120" in result.output and "--resize" in result.output
    assert "plus" not in result.output and " 1 " in result.output  # s0 still scored
    result = _run(
        "--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr",
        "--resize",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "resized" in result.output


def test_grey_and_16_bit_predictions(dataset, tmp_path) -> None:
    pred = tmp_path / "mixed"
    pred.mkdir()
    gt0, gt1 = _photo(0), _photo(1)
    # s0: 16-bit PNG holding exactly the 8-bit values (v * 257) -> identical to gt.
    cv2.imwrite(str(pred / "s0.png"), np.ascontiguousarray(gt0[..., ::-1]).astype(np.uint16) * 257)
    # s1: a grey file against a colour reference.
    _save(pred, "s1.png", gt1[..., 1])
    out = tmp_path / "out"
    result = _run("--pred", str(pred), "--gt", str(dataset["gt"]), "--no-lpips", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "grey and colour" in result.output
    rows = {row["image"]: row for row in _rows(out / "per_image.csv")}
    assert rows["s0"]["psnr"] == "inf"
    assert float(rows["s0"]["ssim"]) == pytest.approx(1.0)
    assert float(rows["s1"]["psnr"]) < 40
    # The mean keeps the identical image's inf rather than silently dropping it.
    assert _rows(out / "metrics.csv")[0]["psnr"] == "inf"
    assert json.loads((out / "summary.json").read_text())["summary"]["mixed"]["psnr"] == "inf"


def test_no_reference_mode(dataset) -> None:
    result = _run("--pred", str(dataset["a"]))
    assert result.exit_code == 0, result.output
    assert "NIQE" in result.output and "PSNR" not in result.output
    assert "BRISQUE" in result.output and "not available" not in result.output


def test_empty_folder_and_bad_files(tmp_path, dataset) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run("--pred", str(empty))
    assert result.exit_code != 0
    assert "no images found" in result.output and str(empty) in result.output
    (dataset["a"] / "s1.png").write_bytes(b"not an image")
    result = _run("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    assert result.exit_code == 1
    assert "s1.png: not an image file" in result.output


def test_usage_errors(dataset) -> None:
    assert _run().exit_code == 2
    assert "--model needs --input" in _run("--model", "x").output
    result = _run("--pred", str(dataset["a"]), "--name", "x", "--name", "y")
    assert result.exit_code == 2 and "--name given 2 times" in result.output


def test_models_are_run_then_evaluated(dataset, tmp_path) -> None:
    torch = pytest.importorskip("torch")
    try:
        from rave.network.enhancer import EnhancementNet
        from rave.zoo import load_enhancer  # noqa: F401
    except ImportError as error:
        pytest.skip(f"model zoo not importable: {error}")
    torch.manual_seed(0)
    checkpoint = tmp_path / "random.pth"
    torch.save(EnhancementNet().state_dict(), checkpoint)
    out = tmp_path / "out"
    result = _run(
        "--input", str(dataset["inputs"]), "--model", str(checkpoint), "--no-nr",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    enhanced = sorted((out / "enhanced").glob("*/*.png"))
    assert [p.name for p in enhanced] == ["s0.png", "s1.png"]
    methods = {row["method"] for row in _rows(out / "metrics.csv")}
    assert methods == {"input", "random"}


def test_lpips_columns_with_a_random_backbone(dataset) -> None:
    from rave.evaluation import perceptual

    model = perceptual.load_lpips(pretrained_backbone=False)
    result = evaluate_folders(
        {"a": dataset["a"]},
        reference=dataset["gt"],
        protocol="standard",
        lpips_model=model,
        no_reference=False,
    )
    assert result.metrics[:5] == ["psnr", "psnr_y", "ssim", "ssim_y", "lpips"]
    assert all(record["lpips"] > 0 for record in result.records)


# --- the reader ---------------------------------------------------------------------------


def test_reader_16_bit_png_keeps_depth_and_rgb_order(tmp_path) -> None:
    rgb16 = np.zeros((4, 5, 3), np.uint16)
    rgb16[..., 0] = 65535  # red
    rgb16[0, 0, 2] = 1000
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))
    image = read_image(path)
    assert image.bit_depth == 16 and image.channels == 3
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (4, 5, 3)
    assert image.pixels[1, 1].tolist() == [1.0, 0.0, 0.0]
    assert image.pixels[0, 0, 2] == pytest.approx(1000 / 65535)


def test_reader_grey_and_exif_orientation(tmp_path) -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey).save(tmp_path / "g.png")
    image = read_image(tmp_path / "g.png")
    assert image.channels == 1 and image.bit_depth == 8
    np.testing.assert_allclose(image.pixels[..., 2], grey / 255.0, atol=1e-7)
    # Orientation 6: stored landscape, displayed rotated 90 degrees clockwise.
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((10, 30, 3), np.uint8)).save(tmp_path / "r.jpg", exif=exif)
    assert read_image(tmp_path / "r.jpg").pixels.shape == (30, 10, 3)


def test_reader_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(ImageReadError, match=r"missing\.png: no such file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(ImageReadError, match=r"bad\.jpg: not an image file"):
        read_image(tmp_path / "bad.jpg")


def _block(monkeypatch: pytest.MonkeyPatch, package: str) -> None:
    """Make ``import package`` fail as if it were not installed (None in sys.modules)."""
    import sys

    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, package, None)


def _checkpoint(tmp_path: Path) -> Path:
    import torch

    from rave.network.enhancer import EnhancementNet

    torch.manual_seed(0)
    path = tmp_path / "random.pth"
    torch.save(EnhancementNet().state_dict(), path)
    return path


@pytest.mark.parametrize("package", ["scipy", "skimage"])
def test_missing_eval_package_stops_before_any_work(
    dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, package: str
) -> None:
    checkpoint = _checkpoint(tmp_path)
    _block(monkeypatch, package)
    out = tmp_path / "out"
    args = ["--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "-o", str(out)]
    result = _run(*args, "--input", str(dataset["inputs"]), "--model", str(checkpoint))
    assert result.exit_code == 1  # as every command whose extra is missing (test_cli_extras)
    lines = result.output.splitlines()
    assert lines == [f"Error: this needs the '{package}' package: pip install 'rave-enhance[eval]'"]
    assert not out.exists()  # no model ran, no report


def test_missing_lpips_names_the_extra(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "lpips")
    result = _run("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-nr")
    assert result.exit_code == 0, result.output
    assert "LPIPS not available" in result.output
    assert "pip install 'rave-enhance[eval]'" in result.output
    assert "pip install lpips" not in result.output


def test_each_failure_is_listed_once(dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    # as in a terminal: no handler on the root logger (pytest installs its own)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    (dataset["a"] / "s1.png").write_bytes(b"not an image")
    result = _run("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    assert result.exit_code == 1
    assert [line for line in result.output.splitlines() if "s1.png" in line] == [
        f"error: {dataset['a'] / 's1.png'}: not an image file, or a format Pillow cannot read"
    ]


def test_nothing_scored_writes_no_report(dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = ("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    assert _run(*good, "-o", str(out)).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    for name in ("s0.png", "s1.png"):
        (dataset["b"] / name).write_bytes(b"not an image")
    args = ("--pred", str(dataset["b"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    result = _run(*args, "-o", str(out), "--overwrite")
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == "error: no image could be scored; no report written"
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old report is kept


def test_every_model_is_checked_before_any_work(dataset, tmp_path: Path) -> None:
    out = tmp_path / "out"
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    first = str(_checkpoint(tmp_path))
    for bad, named in (("nosuch", "unknown model 'nosuch'"), (str(photo), "photo.jpg")):
        args = ["--input", str(dataset["inputs"]), "--model", first, "--model", bad]
        result = _run(*args, "-o", str(out))
        assert result.exit_code == 2, result.output  # as rave enhance, serve, models, export
        lines = result.output.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"Error: --model {bad}: ")
        assert named in lines[0]
        assert not out.exists()  # the first model did not run


def test_output_folder_is_checked_before_any_work(dataset, tmp_path: Path) -> None:
    (tmp_path / "small.jpg").write_bytes(b"a photo")
    out = tmp_path / "small.jpg" / "report"
    args = ["--input", str(dataset["inputs"]), "--model", str(_checkpoint(tmp_path))]
    result = _run(*args, "-o", str(out))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"Error: -o/--output {out}: parent {tmp_path / 'small.jpg'} is a file, not a folder"
    ]


def test_an_undefined_score_left_out_of_the_mean_is_said(dataset, tmp_path: Path) -> None:
    """A flat enhanced image has no reference-protocol SSIM (the authors' data range is
    max - min = 0, and scikit-image gives NaN); the mean is then over the other images, so
    the table's n overstates it unless a note says which image is missing."""
    from skimage.metrics import structural_similarity

    flat = tmp_path / "flat"
    _save(flat, "s0.png", np.full((*SIZE, 3), 90, np.uint8))
    _save(flat, "s1.png", _photo(1) + np.uint8(4))
    out = tmp_path / "report"
    args = ["--pred", str(flat), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr", "-o"]
    result = _run(*args, str(out))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len([n for n in notes if "s0.png" in n and "SSIM ref" in n]) == 1, result.output
    assert not [n for n in notes if "s1.png" in n]
    # the mean is s1's alone: the swapped-channel grey of both 8-bit images, scikit-image
    grey = [cv2.cvtColor(np.ascontiguousarray(im[..., ::-1]), cv2.COLOR_RGB2GRAY)
            for im in (_photo(1) + np.uint8(4), _photo(1))]  # fmt: skip
    alone = structural_similarity(grey[1], grey[0], data_range=float(np.ptp(grey[0])))
    (row,) = _rows(out / "metrics.csv")
    assert float(row["ssim_ref"]) == pytest.approx(float(alone), abs=1e-9)
    assert "SSIM ref undefined" in " ".join(json.loads((out / "summary.json").read_text())["notes"])


def test_scoring_shows_a_progress_bar_unless_quiet_or_verbose(dataset) -> None:
    """Scoring a folder of 2 MP photos takes minutes (NIQE, BRISQUE, SSIM): the command says
    how far it is, as the other long commands do (tqdm on stderr), unless -q or -v."""
    args = ("--pred", str(dataset["a"]), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    inputs = ("--input", str(dataset["inputs"]))
    shown = _run(*args, *inputs)
    assert shown.exit_code == 0, shown.output
    assert "scoring: 100%" in shown.output and "4/4" in shown.output  # 2 inputs, 2 predictions
    quiet = _run(*args, *inputs, "-q")
    assert quiet.exit_code == 0 and "scoring:" not in quiet.output and "4/4" not in quiet.output
    verbose = _run(*args, *inputs, "-v")  # one line per file instead
    assert verbose.exit_code == 0 and "4/4" not in verbose.output
    assert len([line for line in verbose.output.splitlines() if line.startswith("scoring ")]) == 4


def test_models_show_progress_and_their_failures_are_listed_once(
    dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    checkpoint = _checkpoint(tmp_path)
    (dataset["inputs"] / "s2.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    args = ["--input", str(dataset["inputs"]), "--model", str(checkpoint), "--no-nr", "-o"]
    result = _run(*args, str(out))
    assert result.exit_code == 1
    assert "enhancing (random): 100%" in result.output and "3/3" in result.output
    # the model cannot read it and the evaluator cannot score it: one line says so
    lines = [line for line in result.output.splitlines() if "s2.png" in line]
    assert lines == [
        f"error: {dataset['inputs'] / 's2.png'}: not an image file, or a format Pillow cannot read"
    ]
    # a photo the model fails on (here: out of memory) is an error, and the exit status says it
    (dataset["inputs"] / "s2.png").unlink()
    _second_photo_runs_out_of_memory(monkeypatch)
    result = _run(*args, str(out), "--overwrite", "-q")
    assert result.exit_code == 1, result.output
    assert [line for line in result.output.splitlines() if line.startswith("error:")] == [
        f"error: {dataset['inputs'] / 's1.png'}: MemoryError: cannot allocate 3 GB"
    ]


def test_16_bit_files_under_the_reference_protocol_are_noted(dataset, tmp_path: Path) -> None:
    """The reference protocol is the authors' script on 8-bit files; OpenCV's reader, theirs,
    truncates a 16-bit PNG (v >> 8) where rave rounds, so a 16-bit file is named in a note."""
    pred = tmp_path / "deep"
    gt0 = _photo(0)
    pred.mkdir()
    deep = np.ascontiguousarray(gt0[..., ::-1]).astype(np.uint16) * 257 + 128
    cv2.imwrite(str(pred / "s0.png"), deep)
    _save(pred, "s1.png", _photo(1))
    # what the authors' reader makes of it, one level above the rounded value for v >= 128
    theirs = cv2.imread(str(pred / "s0.png"))
    assert np.array_equal(theirs.astype(np.int32), (deep >> 8).astype(np.int32))
    assert not np.array_equal(theirs, np.ascontiguousarray(gt0[..., ::-1]))

    args = ("--pred", str(pred), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    for protocol, noted in (("reference", True), ("both", True), ("standard", False)):
        result = _run(*args, "--protocol", protocol)
        assert result.exit_code == 0, result.output
        notes = [line for line in result.output.splitlines() if "16-bit" in line]
        assert [("s0.png" in n and "s1.png" not in n) for n in notes] == ([True] if noted else [])


def test_a_folder_whose_images_are_in_sub_folders_says_so(dataset, tmp_path: Path) -> None:
    nested = tmp_path / "nested"
    _save(nested / "test", "s0.png", _photo(0))
    result = _run("--pred", str(nested), "--gt", str(dataset["gt"]), "--no-lpips", "--no-nr")
    assert result.exit_code == 1
    assert "1 sub-folder(s) not read" in result.output and str(nested) in result.output


def test_methods_scored_on_different_images_are_said_not_comparable(dataset) -> None:
    """With --skip-unmatched (or a file that fails) each method's mean is over its own
    images: the comparison table would rank means of different sets without a word."""
    (dataset["b"] / "s1.png").unlink()
    args = ["--pred", str(dataset["a"]), "--pred", str(dataset["b"]), "--gt", str(dataset["gt"])]
    result = _run(*args, "--no-lpips", "--no-nr", "--skip-unmatched")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "different images" in line]
    assert len(notes) == 1 and "a 2, b 1; 1 in all of them" in notes[0], result.output
    (dataset["a"] / "s1.png").unlink()  # the same images again: nothing to say
    result = _run(*args, "--no-lpips", "--no-nr", "--skip-unmatched")
    assert result.exit_code == 0 and "different images" not in result.output


def test_report_names_no_best_brightness(dataset, tmp_path: Path) -> None:
    """Brighter is not better (an over-exposed result is brighter than a good one): the
    report marks no best mean/p10 luma and gives them no direction."""
    import re

    out = tmp_path / "out"
    result = _run(
        "--pred", str(dataset["a"]), "--pred", str(dataset["b"]), "--no-nr", "-o", str(out)
    )
    assert result.exit_code == 0, result.output
    page = (out / "report.html").read_text()
    table = page[page.index("<table>") : page.index("</table>")]
    header = re.findall(r"<th>(.*?)</th>", table)
    rows = {
        cells[0]: cells
        for cells in (re.findall(r"<td>(.*?)</td>", row) for row in table.split("<tr>")[2:])
    }
    for label in ("mean luma", "p10 luma"):
        assert label in header  # no arrow after it
        column = header.index(label)
        assert all("<b>" not in rows[m][column] for m in ("a", "b")), rows
    # the directions that exist are kept
    assert "clipped &darr;" in header
    metrics = json.loads((out / "summary.json").read_text())["metrics"]
    assert metrics["mean_luma"]["higher_is_better"] is None
    assert metrics["clipped"]["higher_is_better"] is False


def test_a_model_failure_is_said_when_it_leaves_a_reference_unmatched(
    dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    _second_photo_runs_out_of_memory(monkeypatch)
    args = ["--input", str(dataset["inputs"]), "--model", str(_checkpoint(tmp_path))]
    result = _run(
        *args, "--gt", str(dataset["gt"]), "--no-nr", "--no-lpips", "-q", "-o", str(tmp_path / "o")
    )
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert f"error: {dataset['inputs'] / 's1.png'}: MemoryError: cannot allocate 3 GB" in lines
    assert "no partner" in lines[-1]  # then why nothing was scored


def _second_photo_runs_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model fails on the second photo it enhances (name order: s1) with a MemoryError."""
    from rave.session import Enhancer

    real, calls = Enhancer.enhance_pixels, []

    def fails_on_s1(self, pixels):
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("cannot allocate 3 GB")
        return real(self, pixels)

    monkeypatch.setattr(Enhancer, "enhance_pixels", fails_on_s1)
