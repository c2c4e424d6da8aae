"""The data scripts: synthetic backlit variants, the fixed held-out split, dataset assembly."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from PIL import Image

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _load_script(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # make_demo_photos imports make_default_dataset by name
    spec.loader.exec_module(module)
    return module


dataset = _load_script("make_default_dataset")


def _sky_over_ground(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """Bright sky over a textured, mid-grey foreground: ``(H, W, 3)`` in [0, 1]."""
    rng = np.random.default_rng(seed)
    img = np.empty((h, w, 3), np.float32)
    img[: h // 2] = 0.85
    img[h // 2 :] = 0.5 + 0.1 * rng.standard_normal((h - h // 2, w, 1))
    return np.clip(img, 0, 1)


def test_synthetic_backlit_darkens_foreground_and_keeps_shape() -> None:
    img = _sky_over_ground()
    out = dataset.synthesize_backlit(img, np.random.default_rng(1))
    assert out.shape == img.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    h = img.shape[0]
    ground_in, ground_out = img[h // 2 + 4 :].mean(), out[h // 2 + 4 :].mean()
    sky_in, sky_out = img[: h // 2 - 4].mean(), out[: h // 2 - 4].mean()
    assert ground_out < 0.6 * ground_in  # the subject falls into shadow
    assert sky_out > sky_in  # while the light behind it gets brighter
    assert ground_out < 0.5 * sky_out


def test_synthetic_backlit_is_an_exposure_change_in_linear_light() -> None:
    # Mask 0 everywhere and no noise: every pixel gets the shadow gain in linear light, so
    # sRGB-ish values scale by gain ** (1 / 2.2) (closed form).
    img = _sky_over_ground()
    out = dataset.synthesize_backlit(
        img,
        np.random.default_rng(0),
        mask=np.zeros(img.shape[:2], np.float32),
        shadow_gain=0.1,
        light_gain=2.0,
        noise=0.0,
    )
    np.testing.assert_allclose(out, img * 0.1 ** (1 / 2.2), atol=1e-5)


def test_synthetic_backlit_rejects_grey_images() -> None:
    with pytest.raises(ValueError, match="shape"):
        dataset.synthesize_backlit(np.zeros((8, 8), np.float32), np.random.default_rng(0))


def _fake_source(root: Path) -> Path:
    """A tiny DICM/LIME-like folder: all held-out names, some training ones, one bad file."""
    data = root / "data"
    (data / "dicm").mkdir(parents=True)
    (data / "lime").mkdir()
    rng = np.random.default_rng(0)
    names = [*dataset.HELDOUT_DICM[:3], "03.jpg", "10.jpg"]
    for name in names:
        arr = (rng.random((40, 60, 3)) * 80).astype(np.uint8)
        Image.fromarray(arr).save(data / "dicm" / name)
    for name in [*dataset.HELDOUT_LIME, "3.bmp"]:
        Image.fromarray((rng.random((30, 20, 3)) * 60).astype(np.uint8)).save(data / "lime" / name)
    (data / "dicm" / "04.jpg").write_bytes(b"not a jpeg")
    return data


def test_heldout_split_is_fixed_and_disjoint(tmp_path: Path) -> None:
    data = _fake_source(tmp_path)
    train, heldout, notes = dataset.split_backlit(data)
    held_names = {(p.parent.name, p.name) for p in heldout}
    train_names = {(p.parent.name, p.name) for p in train}
    assert held_names == {("dicm", n) for n in dataset.HELDOUT_DICM[:3]} | {
        ("lime", n) for n in dataset.HELDOUT_LIME
    }
    assert not held_names & train_names
    assert ("dicm", "10.jpg") in train_names and ("lime", "3.bmp") in train_names
    # Held-out files absent from this folder are reported, never silently ignored.
    assert sum("held-out file missing" in n for n in notes) == len(dataset.HELDOUT_DICM) - 3


def test_heldout_split_on_the_real_photos(photos_dir: Path) -> None:
    train, heldout, notes = dataset.split_backlit(photos_dir)
    assert not notes
    assert len(heldout) == len(dataset.HELDOUT_DICM) + len(dataset.HELDOUT_LIME) == 18
    assert not {p.resolve() for p in train} & {p.resolve() for p in heldout}


def test_validation_split_comes_from_the_training_photos(photos_dir: Path) -> None:
    train, heldout, _ = dataset.split_backlit(photos_dir)
    kept, val = dataset.split_validation(train)
    assert {(p.parent.name, p.name) for p in val} == {("dicm", n) for n in dataset.VAL_DICM} | {
        ("lime", n) for n in dataset.VAL_LIME
    }
    assert set(kept) | set(val) == set(train) and not set(kept) & set(val)
    assert not {p.resolve() for p in val} & {p.resolve() for p in heldout}


def test_sweep_clips_bright_input_pixels_and_keeps_the_rest() -> None:
    import torch

    sweep = _load_script("identity_weight_sweep")
    inputs = torch.tensor([0.2, 0.5, 0.7, 0.9]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    brighter = inputs**0.5
    clipped = sweep.clip_highlights(brighter, inputs, 0.6, 0.85)
    # below LOW unchanged, at or above HIGH white, in between pushed up but not to white
    assert torch.equal(clipped[..., :2], brighter[..., :2])
    assert torch.equal(clipped[..., 3], torch.ones(1, 3, 1))
    assert brighter[0, 0, 0, 2] < clipped[0, 0, 0, 2] < 1
    assert sweep.clipped_share(clipped) == 0.25 and sweep.clipped_share(brighter) == 0.0


def test_dataset_script_on_a_tiny_fake_source(tmp_path: Path) -> None:
    data = _fake_source(tmp_path)
    well = tmp_path / "well.png"
    Image.fromarray(np.full((50, 80, 3), 180, np.uint8)).save(well)
    sources = (
        dataset.WellLitSource("test_well", "test", str(well), "CC0"),
        dataset.WellLitSource("test_missing", "test", str(tmp_path / "absent.png"), "CC0"),
    )
    out = tmp_path / "out"
    logged: list[str] = []
    manifest = dataset.build_dataset(
        out, data, max_side=32, synthetic=2, sources=sources, log=logged.append
    )

    def stems(split: str) -> set[str]:
        return {p.stem for p in (out / split).glob("*.png")}

    assert stems("heldout_backlit") == {"dicm_01", "dicm_05", "dicm_09", "lime_2", "lime_7"}
    assert stems("train_backlit") == {
        "dicm_03",
        "dicm_10",
        "lime_3",
        "synthetic_test_well_0",
        "synthetic_test_well_1",
    }
    assert stems("train_well_lit") == {"test_well"}
    for path in out.glob("*/*.png"):
        assert max(Image.open(path).size) <= 32
    skipped = "\n".join(manifest["skipped"])
    assert "04.jpg: unreadable image" in skipped and "test_missing" in skipped
    assert any(line.startswith("skipped:") for line in logged)
    card = (out / "data_card.md").read_text()
    assert "01.jpg" in card and "7.bmp" in card
    assert json.loads((out / "manifest.json").read_text())["splits"]["heldout_backlit"]
    assert not list(out.rglob("*.tmp"))


def test_dataset_script_refuses_to_write_into_its_source(tmp_path: Path) -> None:
    data = _fake_source(tmp_path)
    with pytest.raises(ValueError, match="must not be inside"):
        dataset.build_dataset(data / "out", data, sources=())


def test_demo_photos_are_darker_where_the_subject_is(tmp_path: Path) -> None:
    demo = _load_script("make_demo_photos")
    assert demo.main([str(tmp_path)]) == 0
    made = sorted(tmp_path.glob("*.png"))
    assert [p.stem for p in made] == sorted(s.name for s in demo.DEMO_PHOTOS)
    for path, src in zip(made, sorted(demo.DEMO_PHOTOS, key=lambda s: s.name), strict=True):
        before = np.asarray(dataset.load_well_lit(src), np.float32) / 255
        after = np.asarray(Image.open(path), np.float32) / 255
        assert after.shape == before.shape
        h, w = before.shape[:2]
        centre = (slice(h // 3, h), slice(w // 4, 3 * w // 4))  # where the subject stands
        assert after[centre].mean() < 0.7 * before[centre].mean()


def test_before_after_grid_layout(tmp_path: Path) -> None:
    ba = _load_script("before_after")
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    for stem, size in (("a", (40, 20)), ("b", (20, 20)), ("c", (30, 30))):
        Image.new("RGB", size, "black").save(tmp_path / "in" / f"{stem}.png")
    for stem in ("a", "b"):
        Image.new("RGB", (80, 40), "white").save(tmp_path / "out" / f"{stem}.jpg")
    (tmp_path / "out" / "b.jpg").write_bytes(b"broken")
    target = tmp_path / "grid.png"
    assert (
        ba.main(
            [str(tmp_path / "in"), str(tmp_path / "out"), "-o", str(target), "--row-height", "32"]
        )
        == 0
    )
    grid = Image.open(target)
    # One readable pair (a); b's output is broken, c has none: label row + one row of 32 px.
    assert grid.size == (2 * 64 + 3 * ba.GAP, ba.LABEL_HEIGHT + 32 + 2 * ba.GAP)
    arr = np.asarray(grid.convert("L"))
    y = ba.LABEL_HEIGHT + 16
    assert arr[y, ba.GAP + 32] < 10 and arr[y, 2 * ba.GAP + 64 + 32] > 245


def test_exposure_stats_closed_form() -> None:
    ev = _load_script("evaluate_default")
    before = np.empty((4, 8, 3), np.float32)
    before[:, :4] = 0.1  # the darkest half
    before[:, 4:] = 0.8
    after = np.minimum(before * 2, 1.0)
    stats = ev.exposure_stats(before, after)
    assert stats["mean_lift"] == pytest.approx(0.1)
    assert stats["p10_lift"] == pytest.approx(0.1)
    assert stats["dark_mean_after"] == pytest.approx(0.2)
    assert stats["clipped_before"] == 0.0 and stats["clipped_after"] == 0.5
    assert stats["chroma_shift"] == 0.0  # grey stays grey, clipped or not


def test_evaluate_writes_table_csv_and_grid(tmp_path: Path) -> None:
    ev = _load_script("evaluate_default")
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((20, 30, 3), 40, np.uint8)).save(photos / name)
    (photos / "c.png").write_bytes(b"broken")
    files, notes = ev.heldout_photos(None, photos)
    assert [p.name for p in files] == ["a.png", "b.png", "c.png"] and not notes
    models = [ev.Model("identity", lambda x: x), ev.Model("double", lambda x: np.minimum(2 * x, 1))]
    logged: list[str] = []
    rows, table = ev.evaluate(files, models, tmp_path / "out", grid_height=16, log=logged.append)
    assert len(rows) == 4 and any("c.png: unreadable" in line for line in logged)
    doubled = [r for r in rows if r["model"] == "double"]
    assert all(r["mean_lift"] == pytest.approx(40 / 255) for r in doubled)
    assert "| double |" in table
    double_row = next(line for line in table.splitlines() if line.startswith("| double |"))
    assert "| 0 of 2 (0.0) |" in double_row  # no photo gains clipping (40 -> 80 of 255)
    clipping = [ev.Model("identity", lambda x: x), ev.Model("blow", lambda x: x * 0 + 1)]
    _, table = ev.evaluate(files[:2], clipping, tmp_path / "blow", grid_height=16, log=print)
    blow_row = next(line for line in table.splitlines() if line.startswith("| blow |"))
    assert "| 2 of 2 (100.0) |" in blow_row
    assert (tmp_path / "out" / "results.md").read_text().count("| identity |") == 1
    assert len((tmp_path / "out" / "per_image.csv").read_text().splitlines()) == 5
    grid = Image.open(tmp_path / "out" / "grid.png")
    assert grid.height == 28 + 2 * (16 + 6) + 6  # label row + two photo rows


def test_evaluate_reference_model_runs(checkpoints_dir: Path) -> None:
    ev = _load_script("evaluate_default")
    model = ev.load_model(str(checkpoints_dir / "rave_unpaired.pth"), label="rave-unpaired")
    image = np.random.default_rng(0).random((24, 40, 3), dtype=np.float32) * 0.3
    out = model.run(image)
    assert out.shape == image.shape and out.min() >= 0.0 and out.max() <= 1.0
    assert ev.exposure_stats(image, out)["mean_lift"] > 0  # it brightens dark input


def test_checkpoint_selection_rule() -> None:
    """scripts/select_checkpoint.py: clip no more than the reference, then lift most."""
    sel = _load_script("select_checkpoint")

    def fig(mean: float, p10: float, clipped: float, gain: float) -> dict[str, float]:
        return {"mean_lift": mean, "p10_lift": p10, "clipped_after": clipped,
                "max_gain_points": gain, "chroma_shift": 0.0}  # fmt: skip

    figures = {
        "rave-unpaired": fig(0.06, 0.03, 0.04, 5.0),
        "iter_000100": fig(0.09, 0.05, 0.06, 1.0),  # lifts most, but clips more
        "iter_000200": fig(0.05, 0.04, 0.03, 1.0),  # min ratio 0.83
        "iter_000300": fig(0.07, 0.027, 0.03, 1.5),  # min ratio 0.90: chosen
        "iter_000400": fig(0.08, 0.04, 0.02, 2.5),  # one photo gains > 2 points
    }
    chosen, why = sel.choose(figures, "rave-unpaired")
    assert chosen == "iter_000300" and "0.90" in why
    del figures["iter_000200"], figures["iter_000300"]
    chosen, why = sel.choose(figures, "rave-unpaired")
    assert chosen == "iter_000400" and "clips least" in why


def test_checkpoint_selection_requires_median_clipping_and_colour() -> None:
    """Each held-out target has a validation counterpart: median clipping, chroma shift."""
    sel = _load_script("select_checkpoint")

    def fig(mean: float, median: float, chroma: float) -> dict[str, float]:
        return {"mean_lift": mean, "p10_lift": mean / 2, "clipped_after": 0.02,
                "clipped_after_median": median, "max_gain_points": 1.0,
                "chroma_shift": chroma}  # fmt: skip

    figures = {
        "rave-unpaired": fig(0.06, 0.007, 0.0005),
        "a": fig(0.14, 0.012, 0.0004),  # lifts most, median clipping above the reference's
        "b": fig(0.12, 0.005, 0.0008),  # shifts colours more than the reference
        "c": fig(0.07, 0.005, 0.0003),  # chosen
    }
    chosen, why = sel.choose(figures, "rave-unpaired")
    assert chosen == "c" and "median" in why
    rows = [{"mean_lift": 0.1, "p10_lift": 0.05, "clipped_after": c, "clipped_before": 0.0,
             "chroma_shift": 0.0} for c in (0.01, 0.02, 0.09)]  # fmt: skip
    summary = sel.summarise_model(rows)
    assert summary["clipped_after_median"] == pytest.approx(0.02)
    assert summary["clipped_after"] == pytest.approx(0.04)
    assert summary["max_gain_points"] == pytest.approx(9.0)


def test_checkpoint_selection_clipping_bound_includes_the_input() -> None:
    """Where the photos clip more than the reference leaves, keeping them as they are passes."""
    sel = _load_script("select_checkpoint")

    def fig(mean: float, clipped: float, median: float) -> dict[str, float]:
        return {"mean_lift": mean, "p10_lift": mean / 2, "clipped_after": clipped,
                "clipped_after_median": median, "max_gain_points": 1.0,
                "chroma_shift": 0.0}  # fmt: skip

    figures = {
        "identity": fig(0.0, 0.105, 0.010),
        "rave-unpaired": fig(0.06, 0.077, 0.007),
        "keeps": fig(0.07, 0.104, 0.010),  # the input's own clipping: admissible
        "blows": fig(0.12, 0.110, 0.009),  # mean clipping above both bounds
        "median": fig(0.11, 0.090, 0.012),  # median clipping above both bounds
    }
    assert sel.choose(figures, "rave-unpaired")[0] == "keeps"
    # where the input clips less than the reference, the reference's figure is the bound
    figures["identity"] = fig(0.0, 0.03, 0.004)
    figures["keeps"] = fig(0.07, 0.076, 0.006)
    assert sel.choose(figures, "rave-unpaired")[0] == "keeps"
    figures["keeps"] = fig(0.07, 0.078, 0.006)
    assert "clips least" in sel.choose(figures, "rave-unpaired")[1]


def test_checkpoint_selection_bounds_the_median_photo_gain() -> None:
    """A model adding a little clipping to most photos is refused even within the level bounds."""
    sel = _load_script("select_checkpoint")

    def fig(mean: float, median_gain: float) -> dict[str, float]:
        return {"mean_lift": mean, "p10_lift": mean / 2, "clipped_after": 0.05,
                "clipped_after_median": 0.005, "max_gain_points": 1.0,
                "median_gain_points": median_gain, "chroma_shift": 0.0}  # fmt: skip

    figures = {
        "identity": fig(0.0, 0.0) | {"clipped_after": 0.06, "clipped_after_median": 0.01},
        "rave-unpaired": fig(0.06, -0.1),  # darkens the median photo: the bound is 0 + 0.1
        "adds": fig(0.12, 0.3),
        "holds": fig(0.07, 0.05),
    }
    assert sel.choose(figures, "rave-unpaired")[0] == "holds"
    figures["holds"] = fig(0.07, 0.11)
    assert "clips least" in sel.choose(figures, "rave-unpaired")[1]
    figures["rave-unpaired"] = fig(0.06, 0.25)  # a reference that adds some: its gain + 0.1
    assert sel.choose(figures, "rave-unpaired")[0] == "adds"
    after_before = ((0.01, 0.0), (0.02, 0.015), (0.0, 0.09))
    rows = [{"mean_lift": 0.1, "p10_lift": 0.05, "clipped_after": a, "clipped_before": b,
             "chroma_shift": 0.0} for a, b in after_before]  # fmt: skip
    assert sel.summarise_model(rows)["median_gain_points"] == pytest.approx(0.5)


def test_crop_grid_finds_the_window_where_models_disagree() -> None:
    cg = _load_script("crop_grid")
    values = np.arange(20.0).reshape(4, 5)
    sums, tops, lefts = cg.window_sums(values, 2, 1)
    assert tops == [0, 1, 2] and lefts == [0, 1, 2, 3]
    for i, top in enumerate(tops):  # against direct sums
        for j, left in enumerate(lefts):
            assert sums[i, j] == pytest.approx(values[top : top + 2, left : left + 2].sum())
    base = np.full((120, 160, 3), 0.3)
    other = base.copy()
    other[72:92, 104:124] = 0.9  # the only place where the two outputs differ
    top, left, score = cg.most_telling_window([base, other], 32)
    assert top <= 72 and top + 32 >= 92 and left <= 104 and left + 32 >= 124
    assert score == pytest.approx(0.6 * 20 * 20 / 32**2)
    # windows larger than the image are clamped to it
    assert cg.most_telling_window([base[:10, :12], other[:10, :12]], 32)[:2] == (0, 0)


def test_checkpoint_selection_with_scores_requires_natural_outputs() -> None:
    sel = _load_script("select_checkpoint")

    def fig(mean: float, p10: float, niqe: float, brisque: float) -> dict[str, float]:
        return {"mean_lift": mean, "p10_lift": p10, "clipped_after": 0.01,
                "max_gain_points": 0.5, "chroma_shift": 0.0, "NIQE": niqe,
                "BRISQUE": brisque}  # fmt: skip

    figures = {
        "identity": fig(0.0, 0.0, 3.9, 16.0),
        "rave-unpaired": fig(0.06, 0.03, 3.5, 15.0) | {"clipped_after": 0.04},
        "a/iter_000250": fig(0.09, 0.05, 3.4, 16.3),  # lifts most, BRISQUE worse than input
        "b/iter_000600": fig(0.07, 0.035, 3.4, 14.7),
        "b/iter_000700": fig(0.08, 0.04, 3.6, 14.0),  # NIQE worse than the reference's
    }
    assert sel.choose(figures, "rave-unpaired")[0] == "b/iter_000600"


def test_light_map_gain_figures_closed_form() -> None:
    texture = _load_script("light_map_texture")
    # a 10 x 10 photo whose first row (the darkest tenth) is lifted 4 times, the rest 1.25
    pixels = np.full((10, 10, 3), 0.6, np.float32)
    pixels[0] = 0.05
    light = np.full((10, 10), 0.8, np.float32)
    light[0] = 0.25
    max_gain, dark_gain = texture.gain_figures(light, pixels)
    assert max_gain == pytest.approx(4.0)
    assert dark_gain == pytest.approx(4.0)
    # a photo that is black over more than a tenth: the darkest tenth is not empty
    black = np.zeros((10, 10, 3), np.float32)
    assert texture.gain_figures(np.full((10, 10), 0.5, np.float32), black)[1] == pytest.approx(2)
