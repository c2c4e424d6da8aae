"""Audit of the guidance tools (``rave residual``, ``rave shift``, ``rave interpret``).

Each test names the defect it pins down; each failed on the code before its fix. References
are closed forms or independent computations, never numbers copied from the code.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from _cli_errors import one_error_line
from _tiny_clip import register_tiny_clip
from rave.encoders.base import ImageEncoder, ResizeMode
from rave.guidance import residual as residual_module
from rave.guidance.residual import ResidualVector, compute_residual, load_residual, save_residual

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class MeanColourEncoder(ImageEncoder):
    """Embedding ``normalize([R, G, B, 0.5])`` of the channel means; counts its batches."""

    def __init__(self) -> None:
        super().__init__()
        self.name = "stub:mean-colour"
        self.embed_dim = 4
        self.input_size = 8
        self.calls = 0
        self.scale = nn.Parameter(torch.ones(()), requires_grad=False)

    def embed(self, images: Tensor, *, resize: ResizeMode = "squash") -> Tensor:
        self.calls += 1
        colour = self.preprocess(images, resize).mean(dim=(2, 3)) * self.scale
        return F.normalize(torch.cat([colour, torch.full_like(colour[:, :1], 0.5)], 1), dim=1)

    def features(self, images: Tensor) -> list[Tensor]:
        return [self.preprocess(images, "squash")]


def _flat(folder: Path, colours: list[tuple[int, int, int]], size=(12, 10)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, colour in enumerate(colours):
        Image.new("RGB", size, colour).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from rave.encoders import create_encoder

    return create_encoder(register_tiny_clip(tmp_path_factory.mktemp("clip_cfg")))


def _residual(encoder_name: str, dim: int, seed: int = 0) -> ResidualVector:
    generator = torch.Generator().manual_seed(seed)
    v_w = F.normalize(torch.randn(dim, generator=generator), dim=0)
    v_b = F.normalize(torch.randn(dim, generator=generator), dim=0)
    r = F.normalize(v_w - v_b, dim=0)
    return ResidualVector(
        r, float(v_w @ r), v_w, v_b, encoder_name, 2, 2, 0, "0" * 64, "2026-01-01T00:00:00+00:00"
    )


# --- an empty second folder is refused before the first is embedded ---------------------------


def test_an_empty_well_lit_folder_is_refused_before_any_image_is_embedded(tmp_path: Path) -> None:
    """Defect: the well-lit folder was listed only after every backlit image had been read
    and embedded (minutes for a real set), so a mistyped or empty folder cost that time."""
    backlit = _flat(tmp_path / "backlit", [(10, 10, 10), (20, 30, 40)])
    (tmp_path / "well_lit").mkdir()
    encoder = MeanColourEncoder()
    with pytest.raises(ValueError, match=r"no readable images in .*well_lit.*well-lit folder"):
        compute_residual(backlit, tmp_path / "well_lit", encoder, progress=False)
    assert encoder.calls == 0


def test_a_missing_set_is_refused_before_the_encoder_is_built(tmp_path, monkeypatch) -> None:
    """An encoder given by name (a download, or seconds to build) is not made for nothing."""
    import rave.encoders

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was built before the folders were checked")

    monkeypatch.setattr(rave.encoders, "create_encoder", no_encoder)
    backlit = _flat(tmp_path / "backlit", [(10, 10, 10)])
    (tmp_path / "well_lit").mkdir()
    with pytest.raises(ValueError, match="well-lit folder has no image files"):
        compute_residual(backlit, tmp_path / "well_lit", "effnet-lite0", progress=False)


def test_cli_reports_an_empty_well_lit_folder_without_embedding(tmp_path, monkeypatch) -> None:
    from rave.cli import main

    backlit = _flat(tmp_path / "backlit", [(10, 10, 10), (20, 30, 40)])
    (tmp_path / "well_lit").mkdir()
    encoder = MeanColourEncoder()
    monkeypatch.setattr("rave.encoders.create_encoder", lambda *a, **k: encoder)
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(tmp_path / "well_lit")]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "r.pt"), "-q"])
    assert "well-lit folder has no image files" in one_error_line(result, 1)
    assert encoder.calls == 0
    assert not (tmp_path / "r.pt").exists()


# --- a strip image is not blown up to gigabytes before its centre crop ----------------------


def _clip_preprocessing(image: Tensor, size: int) -> Tensor:
    """CLIP's resize-then-crop written from torchvision's documented calls, whole image."""
    h, w = image.shape[-2:]
    short, long = min(h, w), max(h, w)
    new_long = int(size * long / short)
    out_size = [size, new_long] if w > h else [new_long, size]
    resized = TF.resize(
        image[None], out_size, interpolation=InterpolationMode.BICUBIC, antialias=True
    )
    return TF.center_crop(resized.clamp(0, 1), [size, size])[0]


def _smooth_strip(h: int, w: int) -> Tensor:
    """A strip with content that varies slowly at the scale of its short side."""
    y = torch.linspace(0, 1, h)[:, None]
    x = torch.linspace(0, 1, w)[None]
    base = 0.5 + 0.25 * torch.sin(2 * math.pi * 0.75 * x * w / h + 1) + 0.2 * torch.cos(6 * y)
    return torch.stack([base, 0.8 * base.flip(0), 1 - base]).clamp(0, 1)


def test_strip_images_are_windowed_before_the_resize(tmp_path: Path, monkeypatch) -> None:
    """Defect: CLIP's preprocessing resized a strip's short side to 224 before cropping, so a
    2 x 30000 px PNG (60 kB) became a 224 x 3.4M px float image: 18 GB and 100 s. A 1 px
    high banner in a folder could end a run by running out of memory."""
    seen: list[tuple[int, int]] = []
    resize = residual_module.center_crop_resize

    def spy(images: Tensor, size: int) -> Tensor:
        seen.append(tuple(images.shape[-2:]))
        return resize(images, size)

    monkeypatch.setattr(residual_module, "center_crop_resize", spy)
    backlit = _flat(tmp_path / "backlit", [(10, 10, 10)])
    well_lit = _flat(tmp_path / "well_lit", [(200, 190, 180)], size=(4000, 2))
    rv = compute_residual(backlit, well_lit, MeanColourEncoder(), progress=False)
    assert max(max(h, w) / min(h, w) for h, w in seen) <= 4.5, seen
    # A flat strip keeps its colour: the residual is the closed form of the two colours.
    e_b = F.normalize(torch.tensor([10 / 255] * 3 + [0.5], dtype=torch.float64), dim=0)
    e_w = F.normalize(torch.tensor([200 / 255, 190 / 255, 180 / 255, 0.5]).double(), dim=0)
    r = F.normalize(e_w - e_b, dim=0)
    assert float(rv.residual.double() @ r) > 1 - 1e-6


@pytest.mark.parametrize("shape", [(16, 1600), (1600, 16), (300, 2000), (2, 600)])
def test_the_window_leaves_what_the_encoder_sees(shape: tuple[int, int]) -> None:
    """The window keeps CLIP's crop: the same 224 px as preprocessing the whole strip (up to
    sub-pixel alignment, far below the content's range of about 1)."""
    from rave.encoders.base import center_crop_resize

    image = _smooth_strip(*shape)
    expected = _clip_preprocessing(image, 224)
    windowed = residual_module._central_window(image)
    assert max(windowed.shape[-2:]) <= 4 * min(windowed.shape[-2:]) + 1
    got = center_crop_resize(windowed[None], 224)[0]
    assert float((got - expected).abs().max()) < 0.02


def test_ordinary_photos_are_not_windowed() -> None:
    image = torch.rand(3, 100, 400)  # 4:1, the widest a photo gets through untouched
    assert residual_module._central_window(image) is image


# --- a vocabulary cache that cannot be written ---------------------------------------------


@pytest.mark.parametrize("vocabulary", ["token-ids", "decoded"])
def test_an_unwritable_vocabulary_cache_is_a_warning(
    tiny_clip, tmp_path: Path, monkeypatch, caplog, vocabulary: str
) -> None:
    """Defect: when the cache folder could not be written (a file in the way, read-only,
    full disk) the freshly encoded vocabulary (minutes for 49,408 tokens) ended in a
    traceback instead of being used."""
    from rave.guidance.shift import build_vocabulary

    blocker = tmp_path / "home"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("RAVE_HOME", str(blocker))
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        vocab = build_vocabulary(tiny_clip, vocabulary, limit=40)
    assert vocab.embeddings.shape[1] == tiny_clip.embed_dim and len(vocab.tokens) > 0
    assert any("not cached" in r.getMessage() for r in caplog.records)
    # Against an independent encoding of the same texts: the cache path changed nothing.
    text = vocab.tokens[5] if vocab.decoded else None
    if text is not None:
        direct = tiny_clip.encode_text([text])[0]
        assert float(direct @ vocab.embeddings[5]) > 1 - 1e-5


def test_cli_interpret_with_an_unwritable_cache_still_ranks(tiny_clip, tmp_path, monkeypatch):
    from rave.cli import main

    residual = tmp_path / "r.pt"
    save_residual(_residual(tiny_clip.name, tiny_clip.embed_dim), residual)
    blocker = tmp_path / "home"
    blocker.write_text("x")
    monkeypatch.setenv("RAVE_HOME", str(blocker))
    args = ["interpret", str(residual), "--vocab-limit", "60", "--top", "3", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert len([ln for ln in result.output.splitlines() if ln[:3].strip().isdigit()]) == 3
    # said once, as rave's other warnings are
    assert result.output.count("warning: vocabulary embeddings not cached") == 1
    shifted = tmp_path / "shifted.pt"
    args = ["shift", str(residual), "--remove-tokens", "3", "--vocab-limit", "60", "-q"]
    result = CliRunner().invoke(main, [*args, "-o", str(shifted)])
    assert result.exit_code == 0, result.output
    assert result.output.count("warning: vocabulary embeddings not cached") == 1
    assert load_residual(shifted).residual.shape == (tiny_clip.embed_dim,)


# --- outputs are never replaced unless asked --------------------------------------------------


def test_interpret_plot_is_not_overwritten_unless_asked(tiny_clip, tmp_path, monkeypatch):
    """Defect: `rave interpret --plot` replaced an existing file without a word (it had no
    --overwrite), where every other rave output is kept unless asked."""
    from rave.cli import main
    from rave.guidance import shift

    residual = tmp_path / "r.pt"
    save_residual(_residual(tiny_clip.name, tiny_clip.embed_dim), residual)
    plot = tmp_path / "tokens.png"
    plot.write_bytes(b"an earlier chart")
    built: list[int] = []
    build = shift.build_vocabulary

    def counting_build(*args, **kwargs):
        built.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(shift, "build_vocabulary", counting_build)
    args = ["interpret", str(residual), "--vocab-limit", "60", "--top", "3", "-q"]
    refused = CliRunner().invoke(main, [*args, "--plot", str(plot)])
    assert "--overwrite" in one_error_line(refused, 2)
    assert plot.read_bytes() == b"an earlier chart"
    assert not built  # refused before the vocabulary is encoded
    replaced = CliRunner().invoke(main, [*args, "--plot", str(plot), "--overwrite"])
    assert replaced.exit_code == 0, replaced.output
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_plot_ranking_keeps_a_file_that_appears_while_drawing(tmp_path, monkeypatch) -> None:
    """The check made before the work is made again at the rename: a chart written by
    another run meanwhile is kept (the library default), and no temporary file is left."""
    from matplotlib.figure import Figure

    from rave.guidance.interpret import TokenRanking, plot_ranking

    plot = tmp_path / "tokens.png"
    savefig = Figure.savefig

    def racing_savefig(self, *args, **kwargs):
        plot.write_bytes(b"the other run's chart")
        return savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", racing_savefig)
    ranking = TokenRanking(most=[("a</w>", 0.2)], least=[("b</w>", -0.1)])
    with pytest.raises(FileExistsError):
        plot_ranking(ranking, plot, title="t")
    assert plot.read_bytes() == b"the other run's chart"
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.png"]
    plot_ranking(ranking, plot, title="t", overwrite=True)
    assert plot.read_bytes()[:8] == PNG_SIGNATURE


def test_save_residual_keeps_a_file_that_appears_while_writing(tmp_path, monkeypatch) -> None:
    """Defect: save_residual checked for an existing file only before writing; a file made
    meanwhile (two runs given the same -o) was replaced by the rename without a word."""
    path = tmp_path / "r.pt"
    save = torch.save

    def racing_save(obj, stream, *args, **kwargs):
        path.write_bytes(b"the other run's residual")
        return save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", racing_save)
    rv = _residual("stub", 4)
    with pytest.raises(FileExistsError):
        save_residual(rv, path)
    assert path.read_bytes() == b"the other run's residual"
    assert [p.name for p in tmp_path.iterdir()] == ["r.pt"]
    monkeypatch.setattr(torch, "save", save)
    save_residual(rv, path, overwrite=True)
    assert torch.equal(load_residual(path).residual, rv.residual)


def test_a_dangling_link_at_the_output_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "r.pt"
    path.symlink_to(tmp_path / "elsewhere.pt")
    with pytest.raises(FileExistsError):
        save_residual(_residual("stub", 4), path)
    assert path.is_symlink()


# --- closed form through the real readers -------------------------------------------------


def test_residual_of_mixed_photo_files_matches_the_closed_form(tmp_path: Path) -> None:
    """Grey, RGBA, 16-bit, EXIF-rotated and palette files in one set, flat colours: each
    embeds to its colour (grey replicated, alpha dropped, 16 bits / 65535), so the residual
    is the paper's arithmetic on those colours, computed here in numpy."""
    import cv2

    backlit = tmp_path / "backlit"
    backlit.mkdir()
    Image.new("L", (10, 7), 30).save(backlit / "grey.png")
    Image.new("RGBA", (9, 9), (20, 40, 60, 10)).save(backlit / "alpha.png")
    rotated = Image.new("RGB", (16, 6), (50, 10, 5))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(backlit / "rotated.jpg", exif=exif, quality=100)
    sixteen = np.empty((8, 11, 3), np.uint16)
    sixteen[:] = (3000, 6000, 9000)  # BGR for OpenCV: RGB (9000, 6000, 3000) / 65535
    cv2.imwrite(str(backlit / "sixteen.png"), sixteen)
    (backlit / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    well_lit = _flat(tmp_path / "well_lit", [(220, 200, 180), (250, 250, 240)])
    Image.new("P", (8, 8), 3).save(well_lit / "palette.png")  # default palette: index 3

    rv = compute_residual(backlit, well_lit, MeanColourEncoder(), batch_size=2, progress=False)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    def embed(rgb: list[tuple[float, float, float]]) -> np.ndarray:
        return unit(np.c_[np.asarray(rgb), np.full(len(rgb), 0.5)])

    jpeg = np.asarray(Image.open(backlit / "rotated.jpg").convert("RGB"), np.float64).mean((0, 1))
    palette = np.asarray(Image.open(well_lit / "palette.png").convert("RGB"))[0, 0]
    dark = [(30 / 255,) * 3, (20 / 255, 40 / 255, 60 / 255), tuple(jpeg / 255)]
    dark.append((9000 / 65535, 6000 / 65535, 3000 / 65535))
    bright = [(220 / 255, 200 / 255, 180 / 255), (250 / 255, 250 / 255, 240 / 255)]
    bright.append(tuple(palette / 255))
    v_b, v_w = unit(embed(dark).mean(0)), unit(embed(bright).mean(0))
    r = unit(v_w - v_b)
    assert (rv.num_backlit, rv.num_well_lit, rv.num_skipped) == (4, 3, 1)
    np.testing.assert_allclose(rv.residual.numpy(), r, atol=1e-5)
    assert rv.threshold == pytest.approx(float(v_w @ r), abs=1e-5)


# --- what a residual file says about where it came from -----------------------------------


def test_a_shifted_residual_file_says_it_was_shifted(tiny_clip, tmp_path: Path) -> None:
    """Defect: `rave shift` wrote a file whose metadata (counts, file hash, creation time)
    was the original's and said nothing of the removal: the two files could only be told
    apart by comparing vectors."""
    from rave.guidance.interpret import VocabEmbeddings
    from rave.guidance.shift import remove_concepts, shift_residual

    rv = _residual(tiny_clip.name, tiny_clip.embed_dim)
    assert rv.derivation == ""
    generator = torch.Generator().manual_seed(1)
    vocab = VocabEmbeddings(
        [f"t{i}</w>" for i in range(40)],
        F.normalize(torch.randn(40, tiny_clip.embed_dim, generator=generator), dim=1),
    )
    shifted = shift_residual(rv, tiny_clip, 5, vocab=vocab)
    both = remove_concepts(shifted, ["sunset", "beach"], tiny_clip)
    path = tmp_path / "both.pt"
    save_residual(both, path)
    steps = load_residual(path).derivation.split("; ")
    assert len(steps) == 2
    assert "shifted" in steps[0] and "5 tokens" in steps[0] and "40 token-id" in steps[0]
    assert steps[1] == "concepts removed: 'sunset', 'beach'"
    # the rest of the record is the original's, the threshold is v_w . r'
    back = load_residual(path)
    assert (back.encoder, back.num_backlit, back.files_sha256) == (rv.encoder, 2, "0" * 64)
    assert back.threshold == pytest.approx(float(back.mean_well_lit @ back.residual), abs=1e-6)


def test_cli_shift_and_interpret_show_the_derivation(tiny_clip, tmp_path: Path) -> None:
    from rave.cli import main

    source, shifted = tmp_path / "r.pt", tmp_path / "s.pt"
    save_residual(_residual(tiny_clip.name, tiny_clip.embed_dim), source)
    args = ["shift", str(source), "--remove", "sunset", "-o", str(shifted), "-q"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert load_residual(shifted).derivation == "concepts removed: 'sunset'"
    args = ["interpret", str(shifted), "--vocab-limit", "60", "--top", "3", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "concepts removed: 'sunset'" in result.output.splitlines()[0]


def test_older_residual_files_without_the_new_keys_still_load(tmp_path: Path) -> None:
    """Files written before ``data_sha256`` and ``derivation`` existed load with ``""``."""
    path = tmp_path / "old.pt"
    save_residual(_residual("stub", 4), path)
    payload = torch.load(path, weights_only=True)
    for key in ("data_sha256", "derivation"):
        del payload[key]
    torch.save(payload, path)
    old = load_residual(path)
    assert (old.data_sha256, old.derivation) == ("", "")
    payload["derivation"] = 3
    torch.save(payload, path)
    with pytest.raises(ValueError, match="derivation"):
        load_residual(path)


def test_the_data_hash_follows_the_bytes_not_only_the_names(tmp_path: Path) -> None:
    """Defect: the only fingerprint of the data was a hash of the file names, the same for
    any two sets named 0001.png, 0002.png... ``data_sha256`` hashes each file's bytes too:
    here checked against hashlib over the documented lines."""
    import hashlib

    def compute(root: Path) -> ResidualVector:
        return compute_residual(root / "b", root / "w", MeanColourEncoder(), progress=False)

    one, two, moved = tmp_path / "one", tmp_path / "two", tmp_path / "moved"
    _flat(one / "b", [(10, 10, 10), (30, 20, 10)])
    _flat(one / "w", [(200, 200, 200)])
    _flat(two / "b", [(10, 10, 10), (31, 20, 10)])  # one byte of colour apart, same names
    _flat(two / "w", [(200, 200, 200)])
    _flat(moved / "b", [(10, 10, 10), (30, 20, 10)])  # the same files in another place
    _flat(moved / "w", [(200, 200, 200)])
    first, second, third = compute(one), compute(two), compute(moved)
    assert first.files_sha256 == second.files_sha256  # names alike...
    assert first.data_sha256 != second.data_sha256  # ...the data told apart
    assert third.data_sha256 == first.data_sha256  # the same data recognised
    assert torch.equal(third.residual, first.residual)  # and the same vector
    lines = sorted(
        f"{folder}/{path.name} {hashlib.sha256(path.read_bytes()).hexdigest()}"
        for folder, sub in (("backlit", "b"), ("well_lit", "w"))
        for path in (one / sub).iterdir()
    )
    assert first.data_sha256 == hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --- the bar chart draws every token as written ---------------------------------------------


def test_plot_of_dollar_tokens_is_drawn_not_parsed_as_a_formula(tmp_path: Path) -> None:
    """Defect: CLIP's vocabulary holds ``$$`` (and ``$$$``): as a tick label matplotlib read
    it as a mathtext formula and the chart ended in a ParseException, after the vocabulary
    had been encoded."""
    from rave.guidance.interpret import TokenRanking, _ranking_figure, plot_ranking

    ranking = TokenRanking(
        most=[("$$</w>", 0.3), ("$x$</w>", 0.2)], least=[("^_", -0.2), ("$", -0.1)]
    )
    plot = tmp_path / "tokens.png"
    plot_ranking(ranking, plot, title="$r$.pt")
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    figure = _ranking_figure(ranking, "t", lambda token: token)
    texts = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    assert texts == ["$$</w>", "$x$</w>"]


def test_plot_labels_the_font_cannot_draw_are_escaped(tmp_path: Path) -> None:
    """Defect: CJK pieces of the vocabulary were drawn as empty boxes (two different
    tokens looked the same) and each printed a 'Glyph ... missing' warning."""
    import warnings

    import matplotlib
    import matplotlib.pyplot as plt

    from rave.guidance.interpret import TokenRanking, _ranking_figure, plot_ranking

    ranking = TokenRanking(
        most=[("\u3042\u3044 ", 0.3), ("caf\u00e9 ", 0.2)], least=[("\u4e2d", -0.2), ("x", -0.1)]
    )
    # DejaVu Sans ships with matplotlib (the same font everywhere): Latin-1, no kana or hanzi
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}), warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph is a UserWarning
        plot_ranking(ranking, tmp_path / "t.png", title="t", label=repr)
        figure = _ranking_figure(ranking, "t", repr)
    most = [label.get_text() for label in figure.axes[0].get_yticklabels()]
    least = [label.get_text() for label in figure.axes[1].get_yticklabels()]
    plt.close(figure)
    assert most == ["'\\u3042\\u3044 '", "'caf\u00e9 '"]
    assert least == ["'\\u4e2d'", "'x'"]


def test_control_character_tokens_are_shown_escaped() -> None:
    """Defect: 105 single-byte tokens of CLIP's vocabulary decode to control characters
    (newline, ESC, backspace...), which `rave interpret --vocab token-ids` and `rave shift`
    printed raw: a newline split the table, an ESC reached the terminal."""
    from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode

    from rave.guidance.interpret import display_token, vocabulary

    stand_in = bytes_to_unicode()  # byte -> the printable character BPE shows it as
    assert display_token(stand_in[10]) == "\\n-"  # a piece: trailing "-"
    assert display_token(stand_in[27] + "</w>") == "\\x1b"
    assert display_token("sunset</w>") == "sunset"
    assert display_token(stand_in[0xC3] + stand_in[0xA9] + "</w>") == "\u00e9"  # UTF-8 é
    shown = [display_token(token) for token in vocabulary(SimpleTokenizer())]
    assert all(text.isprintable() for text in shown)


# --- the caller's encoder is left where it is ---------------------------------------------


def test_an_encoder_object_is_not_moved_by_default(tmp_path: Path) -> None:
    """Defect: ``device`` defaulted to "cpu" and the caller's encoder object was moved
    there: ``compute_residual(b, w, cuda_encoder)`` left the caller's CUDA model on the CPU.
    By default it now runs where the encoder is (an explicit ``device`` still moves it)."""

    class Recording(MeanColourEncoder):
        def __init__(self) -> None:
            super().__init__()
            self.moves: list[tuple] = []

        def to(self, *args, **kwargs):  # type: ignore[override]
            self.moves.append(args)
            return super().to(*args, **kwargs)

    backlit = _flat(tmp_path / "backlit", [(10, 10, 10)])
    well_lit = _flat(tmp_path / "well_lit", [(200, 200, 200)])
    encoder = Recording()
    compute_residual(backlit, well_lit, encoder, progress=False)
    assert encoder.moves == []
    compute_residual(backlit, well_lit, encoder, device="cpu", progress=False)
    assert [str(torch.device(*args)) for args in encoder.moves] == ["cpu"]


def test_cli_refuses_a_dangling_link_at_the_output_before_the_work(tmp_path, monkeypatch) -> None:
    """A dangling link at -o was not "existing" to the command's early check, so the refusal
    (the write keeps links) came only after every image had been embedded."""
    from rave.cli import main

    backlit = _flat(tmp_path / "backlit", [(10, 10, 10)])
    well_lit = _flat(tmp_path / "well_lit", [(200, 200, 200)])
    encoder = MeanColourEncoder()
    monkeypatch.setattr("rave.encoders.create_encoder", lambda *a, **k: encoder)
    output = tmp_path / "r.pt"
    output.symlink_to(tmp_path / "nowhere.pt")
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(well_lit), "-q"]
    result = CliRunner().invoke(main, [*args, "-o", str(output)])
    assert "--overwrite" in one_error_line(result, 2)
    assert encoder.calls == 0 and output.is_symlink()
    result = CliRunner().invoke(main, [*args, "-o", str(output), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not output.is_symlink() and load_residual(output).num_backlit == 1


# --- how well r separates the two sets (per-image projections) ------------------------------


DARK = [(10, 12, 30), (40, 20, 5), (25, 25, 25), (230, 225, 220)]  # the last one is bright
BRIGHT = [(200, 180, 160), (240, 250, 255), (120, 200, 90)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _colour_embeddings(colours: list[tuple[int, int, int]]) -> np.ndarray:
    rgb = np.asarray(colours, np.float64) / 255.0
    return _unit(np.c_[rgb, np.full(len(colours), 0.5)])


def test_projections_are_the_closed_form_cosines(tmp_path: Path) -> None:
    """Each image's cos(e_i, r) under the mean-colour encoder, computed here in numpy; the
    bright image filed as backlit is named as sitting on the well-lit side."""
    from rave.guidance.residual import crossing_images, split_projections

    rv = compute_residual(
        _flat(tmp_path / "b", DARK), _flat(tmp_path / "w", BRIGHT), MeanColourEncoder(),
        batch_size=3, progress=False,
    )  # fmt: skip
    e_b, e_w = _colour_embeddings(DARK), _colour_embeddings(BRIGHT)
    r = _unit(_unit(e_w.mean(0)) - _unit(e_b.mean(0)))
    backlit, well_lit = split_projections(rv)
    assert backlit.names == [f"backlit/img{i:02d}.png" for i in range(4)]
    np.testing.assert_allclose(backlit.values, e_b @ r, atol=1e-6)
    np.testing.assert_allclose(well_lit.values, e_w @ r, atol=1e-6)
    middle = ((e_b @ r).mean() + (e_w @ r).mean()) / 2
    assert (e_b @ r)[3] > middle + 0.1  # far on the other side, not a rounding matter
    assert crossing_images(rv) == (["backlit/img03.png"], [])
    # projections belong to this r: not saved, and dropped by a shift
    path = tmp_path / "r.pt"
    save_residual(rv, path)
    with pytest.raises(ValueError, match="projections"):
        split_projections(load_residual(path))
    assert rv.derived("a step").projections == ()


def test_cli_residual_summary_and_histogram(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.pyplot as plt

    from rave.cli import main
    from rave.guidance.residual import _projection_figure

    backlit, well_lit = _flat(tmp_path / "b", DARK), _flat(tmp_path / "w", BRIGHT)
    monkeypatch.setattr("rave.encoders.create_encoder", lambda *a, **k: MeanColourEncoder())
    plot = tmp_path / "projections.png"
    args = ["residual", "--backlit", str(backlit), "--well-lit", str(well_lit), "-q"]
    args += ["-o", str(tmp_path / "r.pt"), "--plot", str(plot)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "1 backlit image(s) on the well-lit side: img03.png" in result.output
    assert plot.read_bytes()[:8] == PNG_SIGNATURE
    # an existing chart is kept unless asked, checked before the work
    (tmp_path / "r.pt").unlink()
    again = CliRunner().invoke(main, args)
    assert "--overwrite" in one_error_line(again, 2) and not (tmp_path / "r.pt").exists()
    # labelled: axis titles, both sets and thr in the legend
    rv = compute_residual(backlit, well_lit, MeanColourEncoder(), progress=False)
    figure = _projection_figure(rv, "t")
    axis = figure.axes[0]
    legend = [text.get_text() for text in axis.get_legend().get_texts()]
    plt.close(figure)
    assert "cos(e_i, r)" in axis.get_xlabel() and axis.get_ylabel() == "images"
    assert any(t.startswith("backlit (4 images)") for t in legend)
    assert any(t.startswith("well-lit (3 images)") for t in legend)
    assert any(t.startswith(f"thr = v_w . r = {rv.threshold:.3f}") for t in legend)


def test_a_fifo_named_like_a_photo_is_said_and_counted(tmp_path: Path, caplog) -> None:
    """Defect: an entry named like a photo that is not a regular file (a FIFO, a device) was
    left out of the residual without a word and not counted as skipped."""
    import os

    backlit = _flat(tmp_path / "backlit", [(10, 10, 10)])
    os.mkfifo(backlit / "pipe.jpg")
    well_lit = _flat(tmp_path / "well_lit", [(200, 200, 200)])
    with caplog.at_level(logging.WARNING, logger="rave.guidance"):
        rv = compute_residual(backlit, well_lit, MeanColourEncoder(), progress=False)
    assert (rv.num_backlit, rv.num_skipped) == (1, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w for w in warnings if "pipe.jpg" in w and "not a regular file" in w]
