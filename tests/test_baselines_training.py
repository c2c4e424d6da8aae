"""CLIP-LIT and CLIP-LIT-Latent as training methods: prompt stages, guided loss, rounds, resume.

A tiny random-weight OpenCLIP architecture (``_tiny_clip``) guides and gives the identity
features, so each test runs in seconds on a CPU.
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from _tiny_clip import register_tiny_clip
from rave.encoders import create_encoder
from rave.network import EnhancementNet, apply_light_map
from rave.training.config import ConfigError, TrainConfig
from rave.training.methods import MethodContext, get_method
from rave.training.methods.clip_lit import (
    PROMPT_METRICS_FILENAME,
    PROMPTS_FILENAME,
    PromptOptions,
    load_prompt_features,
    ranking_pairs,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls when the CPU is oversubscribed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    return register_tiny_clip(tmp_path_factory.mktemp("clip_cfg"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_folders(tmp_path_factory.mktemp("data"))


def _make_folders(root: Path) -> Path:
    """Dark (backlit) and bright (well-lit) smooth random images, plus one unreadable file."""
    rng = np.random.default_rng(0)
    for folder, n, gain in (("backlit", 6, 0.2), ("well", 6, 0.9)):
        (root / folder).mkdir(exist_ok=True)
        for i in range(n):
            image = np.kron(rng.random((4, 4, 3)), np.ones((8, 8, 1))) * gain
            Image.fromarray((image * 255).astype(np.uint8)).save(root / folder / f"{i}.png")
    (root / "well" / "broken.png").write_bytes(b"not an image")
    return root


def _context(tiny_name: str, folders: Path, run_dir: Path, method: str, **options) -> MethodContext:
    config = TrainConfig(
        method=method,
        # random prompts keep the ranking loss above the authors' threshold: no extensions
        method_options={"prompt_extend_iterations": 0, **options},
        guidance_encoder=tiny_name,
        identity_encoder=tiny_name,
        identity_layer_weights=(1.0, 1.0),  # the tiny ViT gives two feature maps
        crop_size=32,
        batch_size=4,
        log_every=1,
        seed=0,
    )
    encoders: dict[str, object] = {}

    def factory(name: str):
        if name not in encoders:
            torch.manual_seed(0)
            encoders[name] = create_encoder(name)
        return encoders[name]

    run_dir.mkdir(parents=True, exist_ok=True)
    return MethodContext(
        config=config,
        device=torch.device("cpu"),
        run_dir=run_dir,
        is_main=True,
        rank=0,
        world_size=1,
        create_encoder=factory,
        backlit_files=tuple(sorted((folders / "backlit").iterdir())),
        well_lit_files=tuple(sorted((folders / "well").iterdir())),
    )


def _prompt_losses(run_dir: Path, stage: str) -> list[float]:
    with (run_dir / PROMPT_METRICS_FILENAME).open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["stage"] == stage]
    return [float(r["loss"]) for r in rows if r["loss"] != "nan"]  # nan: the accuracy row


METHOD_CASES = [
    ("clip-lit-latent", {"prompt_lr": 5e-2}),
    ("clip-lit", {"prompt_lr": 1e-2, "n_ctx": 4}),
]


@pytest.mark.parametrize(("method", "options"), METHOD_CASES)
def test_method_trains_prompts_and_network(method, options, tiny_name, folders, tmp_path) -> None:
    run_dir = tmp_path / "run"
    ctx = _context(
        tiny_name,
        folders,
        run_dir,
        method,
        prompt_init_iterations=40,
        refine_iterations=25,
        prompt_batch_size=8,
        prompt_image_size=32,
        **options,
    )
    instance = get_method(method)(ctx)
    instance.setup()

    # prompt initialisation: cross-entropy falls; the broken file was skipped, not fatal
    init = _prompt_losses(run_dir, "init")
    assert len(init) >= 40 and np.mean(init[-5:]) < np.mean(init[:5])
    assert len(instance.well_lit_set) == 6
    features, encoder = load_prompt_features(run_dir / PROMPTS_FILENAME)
    assert encoder == tiny_name and features.shape == (2, 32)
    assert torch.allclose(features.norm(dim=1), torch.ones(2), atol=1e-5)

    # guided stage: a few network steps on a fixed batch lower the method's total loss
    torch.manual_seed(0)
    net = EnhancementNet(padding_mode="zeros")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    batch = torch.rand(2, 3, 32, 32) * 0.2
    totals = []
    for step in range(8):
        terms = instance.loss(apply_light_map(batch, net(batch)), batch, step=step, stage="guided")
        assert set(terms) >= {"clip", "identity", "total"}
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        totals.append(terms["total"].item())
    assert totals[-1] < totals[0]
    # the prompts are frozen during the guided stage
    assert all(p.grad is None for p in instance.prompts.parameters())

    # rounds: each refinement compares the newest enhanced sets (the last two kept)
    for round_index in range(3):
        instance.end_of_round(round_index, net)
    assert len(instance.enhanced_sets) == 2
    refine = _prompt_losses(run_dir, "refine")
    assert len(refine) >= 3 * 25
    assert instance.refinements_done == 3

    # resume: the state survives a weights_only round trip and skips the prompt stages
    path = tmp_path / "state.pt"
    torch.save(instance.state_dict(), path)
    state = torch.load(path, weights_only=True)
    again = get_method(method)(
        _context(tiny_name, folders, tmp_path / "resumed", method, prompt_image_size=32, **options)
    )
    again.load_state_dict(state)
    assert torch.allclose(again.prompt_features(), instance.prompt_features(), atol=1e-6)
    assert again.refinements_done == 3 and len(again.enhanced_sets) == 2
    for ours, theirs in zip(again.enhanced_sets, instance.enhanced_sets, strict=True):
        assert torch.equal(ours.images, theirs.images)  # recomputed from the kept weights
    assert not (tmp_path / "resumed" / PROMPT_METRICS_FILENAME).exists()


@pytest.mark.parametrize(("method", "options"), METHOD_CASES)
def test_guidance_alone_brightens(method, options, tiny_name, folders, tmp_path) -> None:
    """Without the identity term, L_clip falls and the output moves towards the bright set.

    The logit scale is lowered from 100 so that the random tiny encoder's probabilities are
    not saturated (at 100 the gradient of a confidently classified image vanishes).
    """
    ctx = _context(
        tiny_name,
        folders,
        tmp_path,
        method,
        prompt_init_iterations=40,
        prompt_batch_size=8,
        logit_scale=5.0,
        **options,
    )
    ctx = dataclasses.replace(ctx, config=dataclasses.replace(ctx.config, identity_weight=0.0))
    instance = get_method(method)(ctx)
    instance.setup()
    torch.manual_seed(0)
    net = EnhancementNet(padding_mode="zeros")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    batch = torch.rand(2, 3, 32, 32) * 0.2
    clip, brightness = [], []
    for step in range(8):
        out = apply_light_map(batch, net(batch))
        terms = instance.loss(out, batch, step=step, stage="guided")
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        clip.append(terms["clip"].item())
        brightness.append(out.mean().item())
    assert clip[-1] < clip[0]
    assert brightness[-1] > brightness[0]


def test_latent_starts_from_prompts_file(tiny_name, folders, tmp_path) -> None:
    first = get_method("clip-lit-latent")(
        _context(tiny_name, folders, tmp_path / "a", "clip-lit-latent", prompt_init_iterations=5)
    )
    first.setup()
    prompts = str(tmp_path / "a" / PROMPTS_FILENAME)
    second = get_method("clip-lit-latent")(
        _context(tiny_name, folders, tmp_path / "b", "clip-lit-latent", prompts=prompts)
    )
    second.setup()
    assert torch.allclose(second.prompt_features(), first.prompt_features(), atol=1e-6)
    assert not (tmp_path / "b" / PROMPT_METRICS_FILENAME).exists()  # no initialisation ran


def test_options_are_validated(tiny_name, folders, tmp_path) -> None:
    with pytest.raises(ConfigError, match="n_ctx"):
        get_method("clip-lit-latent")(
            _context(tiny_name, folders, tmp_path, "clip-lit-latent", n_ctx=4)
        )
    with pytest.raises(ConfigError, match="prompt_batch_size"):
        get_method("clip-lit")(
            _context(tiny_name, folders, tmp_path, "clip-lit", prompt_batch_size=0)
        )


def test_clip_lit_needs_a_text_encoder(folders, tmp_path) -> None:
    ctx = _context("effnet-lite0", folders, tmp_path, "clip-lit")
    with pytest.raises(ValueError, match="clip-lit-latent"):
        get_method("clip-lit")(ctx)


def test_defaults_are_the_papers() -> None:
    from rave.training.methods.clip_lit import ClipLitOptions
    from rave.training.methods.clip_lit_latent import ClipLitLatentOptions

    text, latent = ClipLitOptions(), ClipLitLatentOptions()
    assert (text.prompt_lr, latent.prompt_lr) == (5e-6, 5e-4)
    for opts in (text, latent):
        assert opts.prompt_init_iterations == 8000 and opts.prompt_batch_size == 16
        assert opts.prompt_weight_decay == 1e-3 and opts.refine_iterations == 1000
        assert (opts.clip_weight, opts.ranking_weight, opts.logit_scale) == (320.0, 200.0, 100.0)
    assert (text.n_ctx, text.init_word) == (16, "X")


def test_ranking_pairs_follow_the_schedule() -> None:
    b, w, s1, s2 = (torch.full((2, 3), float(i)) for i in range(4))
    opts = PromptOptions()

    def describe(pairs):
        return [(float(a[0, 0]), float(c[0, 0]), m) for a, c, m in pairs]

    assert describe(ranking_pairs(b, w, [], opts)) == [(0, 1, 1.0)]
    assert describe(ranking_pairs(b, w, [s1], opts)) == [(0, 1, 0.9), (0, 2, 0.9), (2, 1, 0.2)]
    # s1 is the newest round's set (enhanced sets are given newest first), as both reference
    # scripts order them: (s1, s2) and (s2, well-lit) with the later margin
    later = describe(ranking_pairs(b, w, [s1, s2], opts))
    assert later == [(0, 1, 0.9), (0, 2, 0.9), (2, 3, 0.1), (3, 1, 0.1)]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["clip-lit-latent", "clip-lit"])
def test_training_loop_runs_and_resumes(method, tiny_name, folders, tmp_path) -> None:
    """End to end through the loop: two rounds, checkpoints readable with weights_only."""
    from rave.training.config import apply_overrides
    from rave.training.loop import train

    base = _context(tiny_name, folders, tmp_path, method).config
    config = apply_overrides(
        base,
        [
            f"backlit_dir={folders / 'backlit'}",
            f"well_lit_dir={folders / 'well'}",
            f"output_dir={tmp_path / 'run'}",
            "reconstruction_iterations=2",
            "max_reinits=0",  # two iterations are too few to judge the initialisation
            "round_iterations=3",
            "iterations=8",
            "batch_size=2",
            "tensorboard=false",
            "sample_every=0",
            "method_options.prompt_init_iterations=5",
            "method_options.refine_iterations=4",
            "method_options.prompt_image_size=32",
        ],
    )

    def factory(name: str, device: torch.device):
        torch.manual_seed(0)
        return create_encoder(name, device=device)

    result = train(config, encoder_factory=factory)
    assert result.iterations == 8
    checkpoint = torch.load(result.last_checkpoint, weights_only=True)
    assert checkpoint["method"]["refinements_done"] == 2
    features, _ = load_prompt_features(result.last_checkpoint)
    assert features.shape == (2, 32)

    longer = apply_overrides(config, ["iterations=11"])
    resumed = train(longer, resume="last", encoder_factory=factory)
    assert resumed.iterations == 11
    assert torch.load(resumed.last_checkpoint, weights_only=True)["method"]["refinements_done"] == 3
