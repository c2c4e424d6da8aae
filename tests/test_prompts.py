"""Prompt pairs and the CLIP-LIT losses (docs/method.md, "CLIP-LIT and CLIP-LIT-Latent")."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from _tiny_clip import register_tiny_clip
from rave.guidance.prompts import (
    LatentPromptPair,
    TextPromptPair,
    encode_token_embeddings,
    margin_ranking_loss,
    negative_probability_loss,
    prompt_classification_loss,
    prompt_probabilities,
)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from rave.encoders import create_encoder

    torch.manual_seed(0)
    return create_encoder(register_tiny_clip(tmp_path_factory.mktemp("clip_cfg")))


def _unit(*rows: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_probabilities_closed_form() -> None:
    prompts = _unit([1.0, 0.0], [0.0, 1.0])
    images = _unit([1.0, 0.0], [1.0, 1.0])
    probs = prompt_probabilities(images, prompts)
    # image 0: cosines (1, 0) -> p_neg = 1 / (1 + e^-100); image 1: equal cosines -> 1/2
    assert probs[0, 0].item() == pytest.approx(1.0 / (1.0 + math.exp(-100.0)))
    assert probs[1, 0].item() == pytest.approx(0.5)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    assert negative_probability_loss(images, prompts).item() == pytest.approx(
        (1.0 / (1.0 + math.exp(-100.0)) + 0.5) / 2
    )


def test_classification_loss_closed_form() -> None:
    prompts = _unit([1.0, 0.0], [0.0, 1.0])
    images = _unit([1.0, 1.0])
    loss = prompt_classification_loss(images, torch.tensor([1]), prompts, scale=1.0)
    assert loss.item() == pytest.approx(math.log(2.0))  # equal logits: -log(1/2)


def test_margin_ranking_loss_closed_form() -> None:
    prompts = _unit([1.0, 0.0], [0.0, 1.0])
    backlit = _unit([1.0, 0.0])  # p_neg ~ 1
    neutral = _unit([1.0, 1.0])  # p_neg = 0.5
    well_lit = _unit([0.0, 1.0])  # p_neg ~ 0
    p_b = 1.0 / (1.0 + math.exp(-100.0))
    assert margin_ranking_loss(backlit, well_lit, prompts, 0.9).item() == pytest.approx(0.0)
    assert margin_ranking_loss(backlit, neutral, prompts, 0.9).item() == pytest.approx(
        0.9 - (p_b - 0.5), abs=1e-6
    )
    # the wrong order is penalised by m plus the difference
    assert margin_ranking_loss(well_lit, backlit, prompts, 0.1).item() == pytest.approx(
        0.1 + (p_b - (1 - p_b)), abs=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        margin_ranking_loss(backlit, torch.cat([neutral, neutral]), prompts, 0.1)


def test_latent_pair_is_unit_and_learns() -> None:
    torch.manual_seed(0)
    pair = LatentPromptPair(8, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(pair().norm(dim=1), torch.ones(2))
    backlit = F.normalize(torch.randn(16, 8) + torch.tensor([3.0] + [0.0] * 7), dim=1)
    well_lit = F.normalize(torch.randn(16, 8) - torch.tensor([3.0] + [0.0] * 7), dim=1)
    images = torch.cat([backlit, well_lit])
    labels = torch.cat([torch.zeros(16), torch.ones(16)]).long()
    optimizer = torch.optim.Adam(pair.parameters(), lr=5e-2)
    first = prompt_classification_loss(images, labels, pair()).item()
    for _ in range(60):
        loss = prompt_classification_loss(images, labels, pair())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.5 * first
    # the direction points from the backlit cluster towards the well-lit one
    assert pair.direction()[0] < 0


def test_token_embeddings_match_encode_text(tiny_clip) -> None:
    """Cutting the sequence after its end token must not change the causal tower's output."""
    model, tokenizer = tiny_clip.model, tiny_clip.tokenizer
    ids = tokenizer(["a backlit photo of a person", "X X X X", "sunset"])
    eot = ids.argmax(dim=1)
    length = int(eot.max()) + 1
    with torch.no_grad():
        reference = model.encode_text(ids)  # OpenCLIP's own implementation, 77 tokens
        ours = encode_token_embeddings(model, model.token_embedding(ids[:, :length]), eot)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_text_pair_initialisation_and_training(tiny_clip) -> None:
    pair = TextPromptPair(tiny_clip.model, tiny_clip.tokenizer, n_ctx=16)
    # start token + 16 words + end token; only the prompts are parameters (CLIP stays frozen)
    assert [name for name, _ in pair.named_parameters()] == ["embeddings"]
    assert pair.embeddings.shape == (2, 18, 32)
    assert set(pair.state_dict()) == {"embeddings", "eot_positions"}
    ids = tiny_clip.tokenizer([" ".join(["X"] * 16)])
    with torch.no_grad():
        expected = F.normalize(tiny_clip.model.encode_text(ids), dim=-1)[0]
        features = pair()
    assert torch.allclose(features[0], expected, atol=1e-5)
    assert torch.allclose(features[1], expected, atol=1e-5)

    torch.manual_seed(0)
    images = F.normalize(torch.randn(8, 32), dim=1)
    labels = torch.tensor([0, 1] * 4)
    optimizer = torch.optim.Adam(pair.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = prompt_classification_loss(images, labels, pair())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is None for p in tiny_clip.model.parameters())


def test_text_pair_loads_reference_shape(tiny_clip) -> None:
    pair = TextPromptPair(tiny_clip.model, tiny_clip.tokenizer, n_ctx=4)
    full = torch.randn(2, 77, 32)
    pair.load_reference_embeddings(full)
    assert torch.equal(pair.embeddings.data, full[:, :6])
    with pytest.raises(ValueError, match="shape"):
        pair.load_reference_embeddings(torch.randn(2, 3, 32))


def test_text_pair_rejects_non_clip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text tower"):
        TextPromptPair(torch.nn.Linear(2, 2), None)
