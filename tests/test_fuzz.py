"""Fuzzing as a test: malformed files through ``read_photo`` and the ``rave enhance`` batch.

Each run happens in a child process with a time limit, so that a crash (segfault in a
decoder) or a hang fails the test instead of taking pytest down. Properties checked:
no exception but :class:`~rave.io.PhotoError` leaves ``read_photo``; what it returns is a
photo rave can enhance; the batch exits 0 or 1 with one line per failed file and no
traceback; every output is a complete image; no temporary file is left; inputs are
untouched. The fast lane has a few hundred cases, the slow one a larger seeded corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from PIL import Image

from _fuzz_corpus import build_corpus

_READER = r"""
import json, sys
from pathlib import Path
from rave.io import PhotoError, read_photo

results = {}
for name in sys.argv[2:]:
    try:
        photo = read_photo(Path(sys.argv[1]) / name, max_pixels=4_000_000)
    except PhotoError as err:
        text = str(err)
        results[name] = {"error": text, "one_line": "\n" not in text and "\x1b" not in text}
    except BaseException as err:
        results[name] = {"escaped": f"{type(err).__name__}: {err}"}
    else:
        pixels = photo.pixels
        results[name] = {
            "dtype": str(pixels.dtype),
            "shape": list(pixels.shape),
            "notes_safe": all("\n" not in n and "\x1b" not in n for n in photo.notes),
        }
print(json.dumps(results))
"""


def _digests(paths: list[Path]) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in paths}


def _environment() -> dict[str, str]:
    source = str(Path(__file__).resolve().parents[1] / "src")
    return {**os.environ, "PYTHONPATH": source + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _read_all(folder: Path, paths: list[Path], timeout: float) -> dict[str, dict]:
    done = subprocess.run(
        [sys.executable, "-c", _READER, str(folder), *(p.name for p in paths)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(),
    )
    assert done.returncode == 0, f"reader crashed ({done.returncode}): {done.stderr[-2000:]}"
    assert done.stderr == "", "a library printed to the terminal: " + done.stderr[:500]
    return json.loads(done.stdout)


def _check_reader(folder: Path, paths: list[Path], timeout: float) -> dict[str, dict]:
    before = _digests(paths)
    results = _read_all(folder, paths, timeout)
    assert set(results) == {p.name for p in paths}
    escaped = {name: r["escaped"] for name, r in results.items() if "escaped" in r}
    assert escaped == {}
    for name, result in results.items():
        if "error" in result:
            assert result["one_line"], name
        else:
            assert result["dtype"] in ("uint8", "uint16", "float32"), name  # float TIFF
            assert len(result["shape"]) == 2 or result["shape"][2] in (2, 3, 4), name
            assert result["notes_safe"], name
    assert _digests(paths) == before
    return results


def test_corpus_has_every_kind_of_damage(tmp_path: Path) -> None:
    paths = build_corpus(tmp_path, seed=0)
    names = {p.name for p in paths}
    assert 250 <= len(paths) <= 600
    for kind in ("_cut", "_flip", "_lie", "size1x64", "size64x1", "huge_icc", "huge_exif",
                 "zero_idat", "zero_app1", "broken_second_page", "float.tif", "bilevel.tif",
                 "multipage.tif", "planar.tif", ".webp", ".jpg", ".png", ".tif"):  # fmt: skip
        assert any(kind in name for name in names), kind


def test_reader_on_fuzz_corpus(tmp_path: Path) -> None:
    paths = build_corpus(tmp_path, seed=0)
    results = _check_reader(tmp_path, paths, timeout=240)
    # The valid originals read, the damaged ones that must fail do.
    assert "error" not in results["base.jpg"] and "error" not in results["deep.png"]
    assert results["deep.png"]["dtype"] == "uint16"
    lying = ("base_lie4x4.jpg", "base_lie40x40.jpg", "base_lie4x4.png", "base_lie_tag257.tif")
    for name in (*lying, "base_lie_tag256.tif", "empty.jpg", "broken_second_page.tif"):
        assert "error" in results[name], name
    truncated = [n for n in results if n.startswith(("base_cut", "deep_cut", "progressive_cut"))]
    assert truncated and all("error" in results[n] for n in truncated)


@pytest.mark.slow
def test_reader_on_large_seeded_corpus(tmp_path: Path) -> None:
    for seed in (1, 2, 3):
        folder = tmp_path / f"seed{seed}"
        paths = build_corpus(folder, seed=seed, cuts=40, flips=40)
        _check_reader(folder, paths, timeout=900)


def _complete_image(path: Path) -> bool:
    from rave.io.heif import register_heif

    register_heif()  # HEIC outputs are opened through pillow-heif, as rave reads them
    try:
        with Image.open(path) as image:
            image.load()
    except Exception:
        decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        return decoded is not None and decoded.size > 0
    return True


def _check_batch(folder: Path, checkpoint: Path, timeout: float) -> None:
    inputs = sorted(folder.iterdir())
    before = _digests(inputs)
    out = folder.parent / "out"
    command = [sys.executable, "-c", "from rave.cli import main; main()", "enhance"]
    options = ["-o", str(out), "-q", "--model", str(checkpoint), "--device", "cpu"]
    done = subprocess.run(
        [*command, *map(str, inputs), *options, "--max-pixels", "4M"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_environment(),
    )
    assert done.returncode in (0, 1), done.stderr[-3000:]
    # escape_icc.jpg's profile description holds "\x1b[2J": nothing may print it raw.
    assert "Traceback" not in done.stderr and "\x1b" not in done.stderr + done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(done.stderr.splitlines()), done.stderr[:3000]
    enhanced = int(done.stdout.split(" enhanced")[0])
    assert enhanced + len(errors) == len(inputs)  # every file named is accounted for
    from rave.io.provenance import MANIFEST_NAME

    # rave's record of what made each result is the one hidden file expected there
    outputs = sorted(p for p in out.iterdir() if p.name != MANIFEST_NAME) if out.exists() else []
    assert len(outputs) == enhanced
    assert not [p for p in outputs if p.name.startswith(".")]
    partial = [p.name for p in outputs if not _complete_image(p)]
    assert not partial, f"partial output: {partial}"
    assert _digests(inputs) == before


def test_batch_on_fuzz_corpus(tmp_path: Path, checkpoint: Path) -> None:
    folder = tmp_path / "corpus"
    build_corpus(folder, seed=0, cuts=3, flips=2)
    _check_batch(folder, checkpoint, timeout=600)


@pytest.mark.slow
def test_batch_on_large_seeded_corpus(tmp_path: Path, checkpoint: Path) -> None:
    folder = tmp_path / "corpus"
    build_corpus(folder, seed=7, cuts=16, flips=16)
    _check_batch(folder, checkpoint, timeout=1800)
