"""The specification's numbers (shared/reference/METHOD.md) that other tests do not pin.

Closed forms only: defaults and config values, the ranking pairs' margins, and the
shifted residual's default token count. tests/test_training.py pins the optimiser, the loss
weights and the encoders; tests/test_network.py the architecture.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from rave.guidance.shift import bias_direction, shift_residual
from rave.training.config import TrainConfig, load_config
from rave.training.data import AugmentParams
from rave.training.methods.clip_lit import ClipLitOptions, PromptOptions, ranking_pairs
from rave.training.methods.clip_lit_latent import ClipLitLatentOptions
from rave.training.methods.rave import RaveOptions

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_augmentation_defaults_are_the_specifications() -> None:
    # METHOD.md 2: flips p=0.5 each, transpose p=0.5, zoom U(0.7, 1.3) p=0.3,
    # rotation within +-90 degrees p=0.3; images resized to 512 x 512
    params = AugmentParams()
    assert (params.hflip_p, params.vflip_p, params.transpose_p) == (0.5, 0.5, 0.5)
    assert (params.zoom_p, params.zoom_range) == (0.3, (0.7, 1.3))
    assert (params.rotate_p, params.rotate_degrees) == (0.3, 90.0)
    config = TrainConfig()
    assert (config.crop_size, config.crop_mode, config.augment) == (512, "resize", True)
    assert (config.round_iterations, config.round_extension) == (2100, 60)


def test_prompt_defaults_are_the_specifications() -> None:
    # METHOD.md 3: softmax(100 cos), 16 words of "X", 8000 CE iterations at batch 16, Adam lr
    # 5e-6 (5e-4 latent) wd 1e-3, 320 L_clip, 1000 refinement iterations, 200 * sum of hinges
    options = ClipLitOptions()
    assert (options.n_ctx, options.init_word, options.logit_scale) == (16, "X", 100.0)
    assert (options.prompt_init_iterations, options.prompt_batch_size) == (8000, 16)
    assert (options.prompt_lr, options.prompt_weight_decay) == (5e-6, 1e-3)
    assert ClipLitLatentOptions().prompt_lr == 5e-4
    assert (options.clip_weight, options.refine_iterations, options.ranking_weight) == (
        320.0,
        1000,
        200.0,
    )


def test_ranking_pairs_have_the_specifications_margins() -> None:
    # round 1: (b, w) 1.0; round 2: (b, w), (b, s1) 0.9 and (s1, w) 0.2; later: (b, w),
    # (b, s1) 0.9, (s1, s2) and (s2, w) 0.1
    options = PromptOptions()
    assert ranking_pairs("b", "w", [], options) == [("b", "w", 1.0)]
    assert ranking_pairs("b", "w", ["s1"], options) == [
        ("b", "w", 0.9),
        ("b", "s1", 0.9),
        ("s1", "w", 0.2),
    ]
    assert ranking_pairs("b", "w", ["s1", "s2"], options) == [
        ("b", "w", 0.9),
        ("b", "s1", 0.9),
        ("s1", "s2", 0.1),
        ("s2", "w", 0.1),
    ]


def test_extension_and_shift_defaults_are_the_specifications() -> None:
    # train_rave.py compares 320 L_res + 22.5 L_id with 90; the shift takes 15 tokens a side
    assert RaveOptions().extension_residual_weight == 320.0
    assert RaveOptions().residual_weight == 1920.0
    for function in (bias_direction, shift_residual):
        assert inspect.signature(function).parameters["top_k"].default == 15


def test_rave_paper_config_is_the_specifications_schedule() -> None:
    config = load_config(REPO_ROOT / "configs" / "rave_paper.yaml")
    assert config.method == "rave" and config.regime == "unpaired"
    assert (config.reconstruction_iterations, config.round_iterations) == (1000, 2100)
    assert (config.round_extension_above, config.round_extension) == (90.0, 60)
    assert (config.best_rule, config.best_window, config.best_every) == ("reference", 30, 20)
    assert config.reinit_below_psnr == 8.0
    # 1000 + 66 rounds of 2100 + 384 iterations of a 67th (docs/method.md)
    assert config.iterations == 1000 + 66 * 2100 + 384
    assert (config.lr, config.weight_decay, config.batch_size) == (2e-5, 1e-3, 8)
    assert not config.loss_resize_antialias
