"""The reader against lying headers, truncated data, library chatter and hostile text."""

from __future__ import annotations

import io
import os
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from rave.io import PhotoError, read_photo
from rave.io.library_messages import captured_messages
from rave.io.printable import printable


def _noisy_jpeg(height: int = 96, width: int = 128) -> bytes:
    rng = np.random.default_rng(1)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        buffer, "JPEG", quality=90
    )
    return buffer.getvalue()


def _claiming(jpeg: bytes, width: int, height: int) -> bytes:
    data = bytearray(jpeg)
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


@pytest.mark.parametrize("size", [(1280, 960), (16000, 12000)])
def test_jpeg_whose_data_cannot_hold_its_claimed_size_is_refused(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    """Before: decoded without a word into a grey photo of the claimed size."""
    path = tmp_path / "lying.jpg"
    path.write_bytes(_claiming(_noisy_jpeg(), *size))
    with pytest.raises(PhotoError, match="compressed data ends before the picture"):
        read_photo(path)


def test_honest_jpeg_reads(tmp_path: Path) -> None:
    path = tmp_path / "honest.jpg"
    path.write_bytes(_noisy_jpeg())
    photo = read_photo(path)
    assert photo.pixels.shape == (96, 128, 3) and photo.notes == []


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_truncated_files_refused_even_if_pillow_is_told_to_accept_them(
    tmp_path: Path, monkeypatch, fmt: str, fraction: float
) -> None:
    rng = np.random.default_rng(2)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(buffer, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * fraction)])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as some libraries do
    with pytest.raises(PhotoError):
        read_photo(path)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_tiff_claiming_more_rows_than_its_strips_hold_is_refused(tmp_path: Path) -> None:
    """Before: the missing rows were filled with black and the photo 'read'."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((16, 24, 3), 120, np.uint8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        if struct.unpack_from("<H", data, entry)[0] == 257:  # ImageLength
            kind = "<H" if struct.unpack_from("<H", data, entry + 2)[0] == 3 else "<I"
            struct.pack_into(kind, data, entry + 8, 800)
    path = tmp_path / "lying.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(PhotoError, match="bytes of pixel data for the"):
        read_photo(path)


def test_library_messages_are_captured_not_printed(capfd) -> None:
    with captured_messages() as messages:
        warnings.warn("Pillow says something", UserWarning, stacklevel=1)
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
    assert messages == [
        "Pillow says something",
        "libpng warning: iCCP: known incorrect sRGB profile",
    ]
    assert capfd.readouterr().err == ""
    os.write(2, b"after\n")  # standard error works again
    assert capfd.readouterr().err == "after\n"


def test_decoder_warning_becomes_an_escaped_note(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    real_open = Image.open

    def chatty_open(*args, **kwargs):
        warnings.warn("odd chunk \x1b[2J found", UserWarning, stacklevel=1)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", chatty_open)
    photo = read_photo(path)
    assert photo.notes == ["decoder message: odd chunk \\x1b[2J found"]


def test_premature_end_warning_is_an_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    real_open = Image.open

    def warning_open(*args, **kwargs):
        os.write(2, b"Premature end of JPEG file\n")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Image, "open", warning_open)
    with pytest.raises(PhotoError, match="truncated or corrupt image data"):
        read_photo(path)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("photo.jpg", "photo.jpg"),
        ("été 東京.jpg", "été 東京.jpg"),
        ("a\x1b[2Jb", "a\\x1b[2Jb"),
        ("line\nerror: forged", "line\\nerror: forged"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("right\u202etxt.exe", "right\\u202etxt.exe"),
        (os.fsdecode(b"bad\xffbyte"), "bad\\xffbyte"),
    ],
)
def test_printable_escapes_only_what_moves_the_terminal(raw: str, shown: str) -> None:
    assert printable(raw) == shown
    assert printable(Path(raw)) == shown


def test_photo_error_escapes_name_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "x\x1b]0;pwned\x07.jpg"
    path.write_bytes(b"")
    with pytest.raises(PhotoError) as caught:
        read_photo(path)
    assert "\x1b" not in str(caught.value) and "\\x1b]0;pwned\\x07.jpg: empty file" in str(
        caught.value
    )


def test_file_that_cannot_be_opened_is_permission_denied(tmp_path: Path, monkeypatch) -> None:
    import builtins

    path = tmp_path / "locked.jpg"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(path)
    real_open = builtins.open

    def open_refusing(file, *args, **kwargs):  # as chmod 000 for a user without root's DAC
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_refusing)
    with pytest.raises(PhotoError, match=r"locked\.jpg: permission denied$"):
        read_photo(path)
