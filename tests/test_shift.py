"""Bias correction of residual vectors: the shifted residual and concept removal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from _cli_errors import one_error_line
from _tiny_clip import register_tiny_clip
from rave.guidance.interpret import VocabEmbeddings
from rave.guidance.residual import ResidualVector, load_residual, save_residual
from rave.guidance.shift import bias_direction, project_out, remove_concepts, shift_residual


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from rave.encoders import create_encoder

    torch.manual_seed(0)
    return create_encoder(register_tiny_clip(tmp_path_factory.mktemp("clip_cfg")))


def _residual(dim: int, encoder: str, seed: int = 0) -> ResidualVector:
    generator = torch.Generator().manual_seed(seed)
    v_w = F.normalize(torch.randn(dim, generator=generator), dim=0)
    v_b = F.normalize(torch.randn(dim, generator=generator), dim=0)
    r = F.normalize(v_w - v_b, dim=0)
    return ResidualVector(
        residual=r,
        threshold=float(v_w @ r),
        mean_well_lit=v_w,
        mean_backlit=v_b,
        encoder=encoder,
        num_backlit=3,
        num_well_lit=3,
        num_skipped=0,
        files_sha256="0" * 64,
        created="2024-01-01T00:00:00+00:00",
    )


def _bias_direction_numpy(r: np.ndarray, e: np.ndarray, k: int) -> np.ndarray:
    """docs/method.md's recipe written independently in NumPy (sorting instead of top-k)."""
    r = r / np.linalg.norm(r)
    s = e @ r
    order = np.argsort(s)
    a = (s[order[-k:], None] * e[order[-k:]]).mean(0)
    b = (s[order[:k], None] * e[order[:k]]).mean(0)
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    u = a + b
    return u / np.linalg.norm(u)


def test_bias_direction_matches_independent_recipe() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(200, 16))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    r = rng.normal(size=16)
    ours = bias_direction(torch.from_numpy(r), torch.from_numpy(e), top_k=15).numpy()
    np.testing.assert_allclose(ours, _bias_direction_numpy(r, e, 15), atol=1e-10)


def test_shifted_residual_unit_orthogonal_and_threshold() -> None:
    rv = _residual(16, "clip:Fake@x")
    e = F.normalize(torch.randn(100, 16, generator=torch.Generator().manual_seed(3)), dim=1)
    vocab = VocabEmbeddings([f"t{i}</w>" for i in range(100)], e)
    shifted = shift_residual(rv, None, top_k=5, vocab=vocab)
    u = bias_direction(rv.residual, e, 5)
    r2 = shifted.residual
    assert r2.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert abs(float(r2 @ u)) < 1e-6
    # r' stays in the plane of r and u: r - (u.r) u, normalised
    expected = F.normalize(rv.residual - (u @ rv.residual) * u, dim=0)
    assert torch.allclose(r2, expected, atol=1e-6)
    assert shifted.threshold == pytest.approx(float(rv.mean_well_lit @ r2), abs=1e-6)
    assert torch.equal(shifted.mean_backlit, rv.mean_backlit)


def test_project_out_several_directions() -> None:
    generator = torch.Generator().manual_seed(1)
    r = torch.randn(10, generator=generator)
    d = torch.randn(3, 10, generator=generator)
    d[2] = d[0] + 0.5 * d[1] + 0.01 * d[2]  # nearly dependent, as related concepts are
    out = project_out(r, d)
    assert out.norm().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(d @ out, torch.zeros(3), atol=1e-5)
    with pytest.raises(ValueError, match="span"):
        project_out(d[0], d)


def test_remove_concepts_with_clip_text(tiny_clip) -> None:
    rv = _residual(tiny_clip.embed_dim, tiny_clip.name)
    out = remove_concepts(rv, ["sunset", "beach"], tiny_clip)
    with torch.no_grad():
        ids = tiny_clip.tokenizer(["sunset", "beach"])
        texts = F.normalize(tiny_clip.model.encode_text(ids), dim=-1)
    assert out.residual.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(texts @ out.residual, torch.zeros(2), atol=1e-5)
    assert out.threshold == pytest.approx(float(rv.mean_well_lit @ out.residual), abs=1e-6)


def test_encoder_mismatch_is_refused(tiny_clip) -> None:
    rv = _residual(tiny_clip.embed_dim, "clip:ViT-B-32@openai")
    with pytest.raises(ValueError, match="encoder"):
        remove_concepts(rv, ["sunset"], tiny_clip)


def test_shift_cli(tiny_clip, tmp_path: Path) -> None:
    from rave.cli import main

    rv = _residual(tiny_clip.embed_dim, tiny_clip.name)
    source = tmp_path / "r.pt"
    save_residual(rv, source)
    out = tmp_path / "shifted.pt"
    args = ["shift", str(source), "--remove-tokens", "5", "--vocab-limit", "300"]
    result = CliRunner().invoke(main, [*args, "--remove", "sunset", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "cos(r, r')" in result.output
    shifted = load_residual(out)
    assert shifted.residual.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert shifted.threshold == pytest.approx(float(rv.mean_well_lit @ shifted.residual), abs=1e-5)
    # the input is untouched and the output is not overwritten without --overwrite
    assert torch.equal(load_residual(source).residual, rv.residual)
    again = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert again.exit_code != 0 and "exists" in again.output
    nothing = CliRunner().invoke(main, ["shift", str(source), "-o", str(tmp_path / "x.pt")])
    assert nothing.exit_code != 0 and "--remove" in nothing.output


def test_shift_cli_checks_its_options_before_any_output(tiny_clip, tmp_path: Path) -> None:
    from rave.cli import main

    source = tmp_path / "r.pt"
    save_residual(_residual(tiny_clip.embed_dim, tiny_clip.name), source)
    out = tmp_path / "shifted.pt"
    args = ["shift", str(source), "-o", str(out), "--remove-tokens", "30"]
    result = CliRunner().invoke(main, [*args, "--vocab-limit", "20"])
    line = one_error_line(result, 2)
    assert "--remove-tokens 30" in line and "--vocab-limit 20" in line and "top_k" not in line
    assert "tokens defining" not in result.output and not out.exists()
    # without --vocab-limit, the vocabulary's own size is the bound, still before any list
    import rave.guidance.shift

    ten = VocabEmbeddings([f"t{i}</w>" for i in range(10)], torch.eye(10, tiny_clip.embed_dim))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rave.guidance.shift, "build_vocabulary", lambda *a, **k: ten)
        result = CliRunner().invoke(main, [*args[:-1], "11", "--vocab", "token-ids"])
    line = one_error_line(result, 2)
    assert line == "Error: --remove-tokens 11: the token-ids vocabulary has only 10 tokens"
    assert "tokens defining" not in result.output and not out.exists()


def test_shift_cli_output_is_checked_before_the_work(tiny_clip, tmp_path: Path) -> None:
    from rave.cli import main

    source = tmp_path / "r.pt"
    save_residual(_residual(tiny_clip.embed_dim, tiny_clip.name), source)
    (tmp_path / "small.jpg").write_bytes(b"a photo")
    out = tmp_path / "small.jpg" / "shifted.pt"
    result = CliRunner().invoke(main, ["shift", str(source), "-o", str(out), "--remove", "sun"])
    line = one_error_line(result, 2)
    assert line.endswith(f"{out}: parent {tmp_path / 'small.jpg'} is a file, not a folder")
    assert "concepts removed" not in result.output


def test_the_vocab_option_offers_the_vocabularies_shift_knows() -> None:
    # The command line spells them out (importing rave.guidance.shift would import torch
    # for --help): the two lists must not drift apart.
    from rave.cli._options import VOCABULARY_CHOICES
    from rave.guidance.shift import VOCABULARIES

    assert VOCABULARY_CHOICES == VOCABULARIES
