"""RAVE's losses against direct numpy computations of docs/method.md's formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rave.losses import identity_loss, residual_loss


def _np_residual_loss(emb: np.ndarray, r: np.ndarray, thr: float) -> float:
    total = 0.0
    for e in emb:
        cos = float(e @ r) / (np.linalg.norm(e) * np.linalg.norm(r))
        total += (cos - thr) ** 2
    return total / len(emb)


def _np_identity_loss(out, ref, weights, scales=None) -> float:
    total = 0.0
    for i in range(out[0].shape[0]):  # summed over the batch
        for layer, w in enumerate(weights):
            mse = float(np.mean((out[layer][i] - ref[layer][i]) ** 2))
            total += w * mse / (1.0 if scales is None else scales[layer])
    return total


def test_residual_loss_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 7))
    r = rng.normal(size=7)
    r /= np.linalg.norm(r)
    got = residual_loss(torch.tensor(emb), torch.tensor(r), 0.3)
    assert got.item() == pytest.approx(_np_residual_loss(emb, r, 0.3), rel=1e-10)


def test_residual_loss_closed_form_cases() -> None:
    r = torch.tensor([1.0, 0.0, 0.0])
    # an embedding along r has cos 1; with thr = 1 the loss is zero
    assert residual_loss(torch.tensor([[2.0, 0.0, 0.0]]), r, 1.0).item() == pytest.approx(0.0)
    # orthogonal embedding: cos 0, loss thr^2; averaged with the aligned one (loss (1-thr)^2)
    emb = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert residual_loss(emb, r, 0.25).item() == pytest.approx((0.25**2 + 0.75**2) / 2)


def test_residual_loss_gradient_moves_projection_towards_threshold() -> None:
    r = torch.tensor([1.0, 0.0])
    emb = torch.tensor([[0.0, 1.0]], requires_grad=True)  # cos 0, below thr 0.5
    residual_loss(emb, r, 0.5).backward()
    assert emb.grad is not None and emb.grad[0, 0] < 0  # descent increases the r component


def test_residual_loss_power_one_pulls_far_and_near_images_equally() -> None:
    r = torch.tensor([1.0, 0.0])
    # cos 0.6 and cos -0.8 (3-4-5 triangles) against thr 0.7: distances 0.1 and 1.5
    emb = torch.tensor([[0.6, 0.8], [-0.8, 0.6]], requires_grad=True)
    loss = residual_loss(emb, r, 0.7, power=1.0)
    assert loss.item() == pytest.approx((0.1 + 1.5) / 2)
    (grad,) = torch.autograd.grad(loss, emb)
    # d cos / d e has norm sin(angle) / |e|: 0.8 and 0.6 here; the loss adds only its sign
    assert grad[0].norm().item() == pytest.approx(0.8 / 2, rel=1e-5)
    assert grad[1].norm().item() == pytest.approx(0.6 / 2, rel=1e-5)
    # the paper's square weighs the far image 2 * 1.5 / (2 * 0.1) = 15 times more
    (grad_sq,) = torch.autograd.grad(residual_loss(emb, r, 0.7), emb)
    ratio = (grad_sq[1].norm() / 0.6) / (grad_sq[0].norm() / 0.8)
    assert ratio.item() == pytest.approx(15.0, rel=1e-5)
    assert residual_loss(emb, r, 0.7, power=3.0).item() == pytest.approx((0.1**3 + 1.5**3) / 2)
    # below 1, an image exactly at thr gets a zero gradient, not an infinite or NaN one
    # (an embedding along r has cos exactly 1 in any float arithmetic: no rounding margin)
    at_thr = torch.tensor([[1.0, 0.0]], requires_grad=True)
    (grad_half,) = torch.autograd.grad(residual_loss(at_thr, r, 1.0, power=0.5), at_thr)
    assert torch.equal(grad_half, torch.zeros_like(grad_half))
    with pytest.raises(ValueError, match="power must be > 0"):
        residual_loss(emb, r, 0.7, power=0.0)


def test_residual_loss_scale_smooths_the_power_near_threshold_only() -> None:
    r = torch.tensor([1.0, 0.0])
    # cos 0.6 and cos -0.8 against thr 0.7: distances 0.1 and 1.5
    emb = torch.tensor([[0.6, 0.8], [-0.8, 0.6]], requires_grad=True)
    s, p = 0.1, 0.5
    expected = sum((d**2 + s**2) ** (p / 2) - s**p for d in (0.1, 1.5)) / 2
    loss = residual_loss(emb, r, 0.7, power=p, scale=s)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    (grad,) = torch.autograd.grad(loss, emb)
    (grad_plain,) = torch.autograd.grad(residual_loss(emb, r, 0.7, power=p), emb)
    # d rho / d d = p d (d^2 + s^2)^(p/2 - 1), against p |d|^(p-1) for the plain power:
    # at d = 0.1 = s the push is 2^-0.75 = 0.59 of the plain one, at d = 1.5 within 1%
    near = grad[0].norm() / grad_plain[0].norm()
    far = grad[1].norm() / grad_plain[1].norm()
    assert near.item() == pytest.approx(2**-0.75, rel=1e-5)
    assert far.item() == pytest.approx((1 + (s / 1.5) ** 2) ** -0.75, rel=1e-5)
    assert far.item() > 0.99
    # an image just beside thr is hardly pushed: the slope goes to 0 instead of to infinity
    beside = torch.tensor([[0.7, 0.71414284]], requires_grad=True)  # cos 0.7: 0.01 above 0.69
    (grad_beside,) = torch.autograd.grad(residual_loss(beside, r, 0.69, power=p, scale=s), beside)
    (grad_beside_plain,) = torch.autograd.grad(residual_loss(beside, r, 0.69, power=p), beside)
    assert grad_beside.norm() < 0.2 * grad_beside_plain.norm()
    # the paper's square does not depend on the scale
    assert residual_loss(emb, r, 0.7, power=2.0, scale=s).item() == pytest.approx(
        (0.1**2 + 1.5**2) / 2
    )
    with pytest.raises(ValueError, match="scale must be >= 0"):
        residual_loss(emb, r, 0.7, power=p, scale=-0.1)


def test_residual_loss_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        residual_loss(torch.zeros(2, 3), torch.zeros(4), 0.0)


def test_identity_loss_matches_numpy_and_sums_over_batch() -> None:
    rng = np.random.default_rng(1)
    shapes = [(3, 4, 6, 6), (3, 5, 3, 3), (3, 2, 2, 2), (3, 3, 1, 1), (3, 6)]
    out = [rng.normal(size=s) for s in shapes]
    ref = [rng.normal(size=s) for s in shapes]
    weights = (1.0, 1.0, 1.0, 1.0, 0.5)
    got = identity_loss([torch.tensor(a) for a in out], [torch.tensor(a) for a in ref], weights)
    assert got.item() == pytest.approx(_np_identity_loss(out, ref, weights), rel=1e-6)

    # doubling the batch with copies doubles the loss (sum, not mean, over the batch)
    out2 = [torch.tensor(np.concatenate([a, a])) for a in out]
    ref2 = [torch.tensor(np.concatenate([a, a])) for a in ref]
    assert identity_loss(out2, ref2, weights).item() == pytest.approx(2 * got.item(), rel=1e-6)


def test_identity_loss_scales_divide_each_layer() -> None:
    rng = np.random.default_rng(2)
    out = [rng.normal(size=(2, 3, 4, 4)) for _ in range(2)]
    ref = [rng.normal(size=(2, 3, 4, 4)) for _ in range(2)]
    scales = (4.0, 0.5)
    got = identity_loss(
        [torch.tensor(a) for a in out], [torch.tensor(a) for a in ref], (1.0, 2.0), scales
    )
    assert got.item() == pytest.approx(_np_identity_loss(out, ref, (1.0, 2.0), scales), rel=1e-6)


def test_identity_loss_is_zero_for_identical_features_and_checks_lengths() -> None:
    feats = [torch.rand(2, 3, 4, 4) for _ in range(5)]
    assert identity_loss(feats, [f.clone() for f in feats]).item() == 0.0
    with pytest.raises(ValueError, match="must match"):
        identity_loss(feats, feats, weights=(1.0, 1.0))
    with pytest.raises(ValueError, match="layer 1"):
        identity_loss(feats, [feats[0], torch.rand(2, 3, 5, 5), *feats[2:]])


def test_rave_residual_power_is_the_papers_square_by_default_and_positive() -> None:
    from rave.training.methods.rave import RaveOptions

    assert RaveOptions().residual_power == 2.0
    with pytest.raises(ValueError, match="residual_power must be > 0"):
        RaveOptions(residual_power=-1.0)
    assert RaveOptions().residual_scale == 0.0
    with pytest.raises(ValueError, match="residual_scale must be >= 0"):
        RaveOptions(residual_scale=-0.1)
