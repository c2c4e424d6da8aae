"""Guiding encoders: shapes, unit norms, gradients, weights, preprocessing and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from rave.encoders import ImageEncoder, canonical_name, create_encoder, list_encoders
from rave.encoders.base import center_crop_resize, squash_resize

# ImageNet classes 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian).
CAT_CLASSES = range(281, 286)


@pytest.fixture(scope="module")
def effnet() -> ImageEncoder:
    return create_encoder("effnet-lite0")


@pytest.fixture(scope="module")
def clip_vit() -> ImageEncoder:
    return create_encoder("clip:ViT-B-32@random")


@pytest.fixture(scope="module")
def clip_rn101() -> ImageEncoder:
    return create_encoder("clip:RN101@random")


def _chelsea() -> torch.Tensor:
    import skimage.data

    return torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255.0


def _embed_and_features_with_grad(
    encoder: ImageEncoder, images: torch.Tensor, resize: str = "squash"
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One pass through ``embed`` and ``features``; checks gradients reach only the input."""
    assert not encoder.training
    assert all(not p.requires_grad for p in encoder.parameters())
    x = images.clone().requires_grad_(True)
    e = encoder.embed(x, resize=resize)  # type: ignore[arg-type]
    maps = encoder.features(x)
    (e.sum() + sum(m.square().mean() for m in maps)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in encoder.parameters())
    return e.detach(), [m.detach() for m in maps]


# --- EfficientNet-Lite0 --------------------------------------------------------------------


def test_effnet_weights_are_the_packaged_imagenet_ones(effnet) -> None:
    with torch.inference_mode():
        logits = effnet.classify(_chelsea())
    assert logits.shape == (1, 1000)
    assert int(logits.argmax()) in CAT_CLASSES
    assert float(logits.softmax(dim=1)[0, list(CAT_CLASSES)].sum()) > 0.5


def test_effnet_embed_shapes_and_unit_norm(effnet) -> None:
    images = torch.rand(2, 3, 96, 160)
    for resize in ("squash", "center_crop"):
        with torch.inference_mode():
            e = effnet.embed(images, resize=resize)
        assert e.shape == (2, effnet.embed_dim)
        assert e.dtype == torch.float32
        torch.testing.assert_close(e.norm(dim=1), torch.ones(2))


def test_effnet_features_and_gradients(effnet) -> None:
    _, maps = _embed_and_features_with_grad(effnet, torch.rand(2, 3, 64, 80))
    assert len(maps) == len(effnet.feature_scales) == 5
    # EfficientNet halves the resolution at the stem and four times in the blocks.
    assert [m.shape[-1] for m in maps] == [112, 56, 28, 14, 7]
    assert all(m.shape[0] == 2 and m.dtype == torch.float32 for m in maps)
    assert all(s > 0 for s in effnet.feature_scales)


def test_effnet_stays_in_eval_mode(effnet) -> None:
    effnet.train()
    assert not effnet.training and not any(m.training for m in effnet.modules())


def test_effnet_embedding_responds_to_exposure_not_only_content(effnet) -> None:
    # The same photo at two exposures is closer than two different photos: a sanity check
    # of the statistics embedding (the layer choice is justified by the measurement script).
    import skimage.data

    cat = _chelsea()
    coffee = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1)[None].float() / 255.0
    with torch.inference_mode():
        e = effnet.embed(torch.cat([cat, cat.pow(1.5)]), resize="center_crop")
        f = effnet.embed(coffee, resize="center_crop")
    assert float(e[0] @ e[1]) > float(e[0] @ f[0])
    assert float(e[0] @ e[1]) < 0.9999


# --- CLIP through OpenCLIP -----------------------------------------------------------------


def test_clip_vit_shapes_norm_and_gradients(clip_vit) -> None:
    e, maps = _embed_and_features_with_grad(clip_vit, torch.rand(1, 3, 100, 150), "center_crop")
    assert e.shape == (1, 512) and clip_vit.embed_dim == 512
    torch.testing.assert_close(e.norm(dim=1), torch.ones(1))
    # ViT-B/32 at 224 px: 7x7 patch tokens of width 768, after blocks 3, 6, 9 and 12.
    assert [tuple(m.shape) for m in maps] == [(1, 768, 7, 7)] * 4
    assert len(clip_vit.feature_scales) == 4


@pytest.mark.slow
def test_clip_rn101_five_depths_and_gradients(clip_rn101) -> None:
    e, maps = _embed_and_features_with_grad(clip_rn101, torch.rand(1, 3, 120, 90))
    assert e.shape == (1, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(1))
    # CLIP's ModifiedResNet-101: stem (post avg-pool) 64 ch at 56 px, then layers 1-4.
    assert [tuple(m.shape[1:]) for m in maps] == [
        (64, 56, 56),
        (256, 56, 56),
        (512, 28, 28),
        (1024, 14, 14),
        (2048, 7, 7),
    ]
    assert clip_rn101.feature_scales == (1.0,) * 5


def test_clip_exposes_model_and_tokenizer(clip_vit) -> None:
    tokens = clip_vit.tokenizer(["a backlit photo", "a well-lit photo"])
    assert tokens.shape == (2, 77)
    with torch.inference_mode():
        text = clip_vit.model.encode_text(tokens)
    assert text.shape == (2, 512)
    torch.testing.assert_close(clip_vit.encode_text(["x"]).norm(dim=1), torch.ones(1))


def test_clip_names() -> None:
    from rave.encoders.openclip import parse_clip_name

    assert parse_clip_name("clip:ViT-B-32") == ("ViT-B-32", "openai")
    assert parse_clip_name("clip:RN101@openai") == ("RN101", "openai")
    assert parse_clip_name("clip:ViT-B-16@/a/b@c.pt") == ("ViT-B-16", "/a/b@c.pt")
    assert canonical_name("clip:ViT-B-32") == "clip:ViT-B-32@openai"
    assert canonical_name("effnet-lite0") == "effnet-lite0"
    with pytest.raises(ValueError, match="architecture"):
        parse_clip_name("clip:")


def test_clip_bad_sources() -> None:
    with pytest.raises(ValueError, match="unknown OpenCLIP architecture"):
        create_encoder("clip:NoSuchNet@random")
    with pytest.raises(ValueError, match="known tags"):
        create_encoder("clip:ViT-B-32@no_such_tag")
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        create_encoder("clip:ViT-B-32@/nonexistent/missing.pt")


@pytest.fixture(scope="module")
def tiny_clip_arch(tmp_path_factory) -> str:
    """A tiny CLIP architecture registered with OpenCLIP, so weights files stay small."""
    import open_clip

    name = "rave-test-tiny-vit"
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                     "layers": 1},
    }  # fmt: skip
    path = tmp_path_factory.mktemp("clip_cfg") / f"{name}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return name


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_clip_local_weights_file_round_trip(tiny_clip_arch, tmp_path: Path, suffix) -> None:
    import open_clip

    torch.manual_seed(1)  # not clip:ARCH@random's own seed, so the two models differ
    source = open_clip.create_model(tiny_clip_arch, pretrained=None)
    state = {k: v.clone().contiguous() for k, v in source.state_dict().items()}
    weights = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(state, weights)
    else:
        from safetensors.torch import save_file

        save_file(state, str(weights))

    encoder = create_encoder(f"clip:{tiny_clip_arch}@{weights}")
    assert encoder.name == f"clip:{tiny_clip_arch}@{weights}"
    assert encoder.input_size == 64 and encoder.embed_dim == 32
    loaded = encoder.model.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    # A second random model differs, so the equality above is not an accident of seeding.
    other = create_encoder(f"clip:{tiny_clip_arch}@random").model.state_dict()
    assert not all(torch.equal(other[k], state[k]) for k in state)
    with torch.inference_mode():
        e = encoder.embed(torch.rand(2, 3, 50, 70))
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))


def test_clip_weights_file_with_code_is_refused(tiny_clip_arch, tmp_path: Path) -> None:
    # weights_only loading must refuse a pickle that would run code.
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    weights = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, weights)
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as nothing runs
        create_encoder(f"clip:{tiny_clip_arch}@{weights}")
    assert not (tmp_path / "pwned").exists()


# --- preprocessing -------------------------------------------------------------------------


def test_center_crop_of_short_side_224_is_a_plain_crop() -> None:
    x = torch.rand(1, 3, 224, 300)
    torch.testing.assert_close(center_crop_resize(x, 224), x[..., :, 38:262])
    torch.testing.assert_close(squash_resize(x[..., :224], 224), x[..., :224])


def test_center_crop_matches_clip_pil_preprocessing() -> None:
    # CLIP's reference preprocessing: PIL bicubic resize of the short side, centre crop.
    from torchvision import transforms

    rng = np.random.default_rng(0)
    smooth = rng.random((30, 40, 3))
    array = np.array(
        Image.fromarray((smooth * 255).astype(np.uint8)).resize((400, 300), Image.BICUBIC)
    )
    pil = transforms.Compose(
        [
            transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
        ]
    )(Image.fromarray(array))
    ours = center_crop_resize(torch.from_numpy(array).permute(2, 0, 1)[None] / 255.0, 224)[0]
    assert ours.shape == pil.shape == (3, 224, 224)
    assert float((ours - pil).abs().mean()) < 0.01


def test_squash_keeps_whole_image() -> None:
    # Left half black, right half white: squashing keeps the split in the middle.
    x = torch.zeros(1, 3, 100, 300)
    x[..., 150:] = 1.0
    y = squash_resize(x, 224)
    assert y.shape == (1, 3, 224, 224)
    assert float(y[..., :100].max()) < 0.01 and float(y[..., 124:].min()) > 0.99


def test_bad_image_batches_are_refused(effnet) -> None:
    with pytest.raises(ValueError, match="shape"):
        effnet.embed(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="shape"):
        effnet.embed(torch.rand(1, 4, 64, 64))
    with pytest.raises(ValueError, match="floating"):
        effnet.embed(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="resize"):
        effnet.embed(torch.rand(1, 3, 64, 64), resize="crop")  # type: ignore[arg-type]


# --- registry ------------------------------------------------------------------------------


def test_registry() -> None:
    names = list_encoders()
    assert "effnet-lite0" in names and "clip:ViT-B-32@openai" in names
    with pytest.raises(ValueError, match="unknown encoder 'resnet50'"):
        create_encoder("resnet50")
    with pytest.raises(ValueError, match="autocast_dtype"):
        create_encoder("effnet-lite0", autocast_dtype=torch.float64)


def test_autocast_only_on_cuda() -> None:
    encoder = create_encoder("effnet-lite0", autocast_dtype=torch.bfloat16)
    assert encoder.autocast_dtype is None  # CPU: float32
    assert next(encoder.parameters()).dtype == torch.float32


# --- Blurred guidance ("NAME+blurSIGMA") -----------------------------------------------------


def _smooth_photo_and_checkerboard() -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth random image at 224 px in [0.25, 0.75] and a +-0.1 one-pixel checkerboard."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(2, 3, 14, 14, generator=generator)
    smooth = F.interpolate(coarse, size=224, mode="bilinear", align_corners=False) * 0.5 + 0.25
    index = torch.arange(224)
    checkerboard = ((index[:, None] + index[None, :]) % 2).float() * 0.2 - 0.1
    return smooth, checkerboard


def test_blurred_encoder_is_blind_to_fine_texture_but_sees_exposure(effnet) -> None:
    blurred = create_encoder("effnet-lite0+blur2")
    smooth, checkerboard = _smooth_photo_and_checkerboard()
    textured = smooth + checkerboard  # in [0.15, 0.85]: no clipping
    brighter = smooth * 1.3  # <= 0.975
    for encoder, texture_seen in ((effnet, True), (blurred, False)):
        base = encoder.embed(smooth)
        texture_shift = (encoder.embed(textured) - base).norm(dim=1)
        exposure_shift = (encoder.embed(brighter) - base).norm(dim=1)
        # a Gaussian of sigma 2 keeps exp(-2 pi^2 sigma^2 / 4) ~ 3e-9 of the Nyquist checkerboard
        assert bool((texture_shift > 0.1).all()) == texture_seen
        assert bool((texture_shift < 1e-3).all()) == (not texture_seen)
        assert bool((exposure_shift > 0.05).all())


def test_blurred_encoder_names_and_gradients() -> None:
    encoder = create_encoder("effnet-lite0+blur1.50")
    assert encoder.name == "effnet-lite0+blur1.5" and encoder.blur_sigma == 1.5
    assert canonical_name("clip:RN101+blur2.0") == "clip:RN101@openai+blur2"
    assert canonical_name("effnet-lite0") == "effnet-lite0"
    _embed_and_features_with_grad(encoder, torch.rand(1, 3, 128, 96))
    with pytest.raises(ValueError, match="does not fit its 224 px input"):
        create_encoder("effnet-lite0+blur80")
    for suffix in ("", "0", "-1", "x", "1e2"):
        with pytest.raises(ValueError, match="blur suffix takes a positive number"):
            create_encoder(f"effnet-lite0+blur{suffix}")
    with pytest.raises(ValueError, match=r"unknown encoder 'resnet50\+blur2'.*\+blurSIGMA"):
        create_encoder("resnet50+blur2")


def test_residual_of_blurred_encoder_is_refused_for_the_plain_one() -> None:
    from rave.guidance.residual import ResidualVector, check_encoder

    unit = F.normalize(torch.ones(8), dim=0)
    rv = ResidualVector(unit, 0.1, unit, unit, "effnet-lite0+blur2", 1, 1, 0, "", "")
    check_encoder(rv, "effnet-lite0+blur2.0")
    with pytest.raises(
        ValueError, match=r"recompute it with .rave residual --encoder effnet-lite0."
    ):
        check_encoder(rv, "effnet-lite0")


def test_openclip_root_log_lines_stay_out_of_a_python_callers_terminal(monkeypatch, capsys) -> None:
    """Not only the command line: a program calling the encoder loader gets the exception,
    not OpenCLIP's raw "ERROR:root:" line next to it."""
    import logging

    open_clip = pytest.importorskip("open_clip")
    from rave.encoders import openclip as loader

    def failing_download(*args, **kwargs):
        logging.error("Failed to download weights (offline)")  # what OpenCLIP does
        raise RuntimeError("no network")

    monkeypatch.setattr(open_clip, "create_model", failing_download)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # as in a plain script
    with pytest.raises(RuntimeError, match="could not load the 'openai' weights of ViT-B-32"):
        loader._load_model("ViT-B-32", "openai")
    assert "Failed to download" not in capsys.readouterr().err
    assert logging.getLogger().handlers == []  # no basicConfig handler left behind


def test_random_clip_weights_are_the_same_in_every_process(tiny_clip_arch) -> None:
    # A residual vector made with clip:ARCH@random is read later (rave interpret, rave
    # shift) by a newly created encoder: it must be the same text tower.
    torch.manual_seed(123)
    first = create_encoder(f"clip:{tiny_clip_arch}@random").model.state_dict()
    after_first = torch.rand(3)
    torch.manual_seed(123)
    torch.rand(7)  # another position in the caller's random stream
    second = create_encoder(f"clip:{tiny_clip_arch}@random").model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    # ...and creating it leaves the caller's random stream where it was.
    torch.manual_seed(123)
    assert torch.equal(torch.rand(3), after_first)
