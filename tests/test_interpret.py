"""Reading directions through CLIP's vocabulary: encoding, caching, ranking, plots, CLI."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from _cli_errors import one_error_line
from _tiny_clip import register_tiny_clip
from rave.guidance import interpret
from rave.guidance.interpret import (
    VocabEmbeddings,
    display_token,
    plot_ranking,
    rank_tokens,
    vocab_embeddings,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUOTED = r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\""  # a Python repr of a string


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from rave.encoders import create_encoder

    torch.manual_seed(0)
    return create_encoder(register_tiny_clip(tmp_path_factory.mktemp("clip_cfg")))


def test_vocab_embeddings_match_library_encoding(tiny_clip) -> None:
    vocab = vocab_embeddings(tiny_clip, limit=40, use_cache=False)
    assert len(vocab.tokens) == 40 and vocab.embeddings.shape == (40, tiny_clip.embed_dim)
    decoder = tiny_clip.tokenizer.decoder
    assert vocab.tokens == [decoder[i] for i in range(40)]
    # reference: OpenCLIP's encode_text on the padded 77-token sequences [start, t, end, 0...]
    ids = torch.zeros(40, 77, dtype=torch.long)
    ids[:, 0] = tiny_clip.tokenizer.sot_token_id
    ids[:, 1] = torch.arange(40)
    ids[:, 2] = tiny_clip.tokenizer.eot_token_id
    with torch.no_grad():
        expected = F.normalize(tiny_clip.model.encode_text(ids), dim=-1)
    assert torch.allclose(vocab.embeddings, expected, atol=1e-5)


def test_vocab_cache_is_used_and_keyed_by_weights(tiny_clip, monkeypatch) -> None:
    assert "RAVE_HOME" in os.environ  # the suite's isolated cache
    first = vocab_embeddings(tiny_clip, limit=30)
    files = list(interpret.cache_dir().glob("*.safetensors"))
    assert len(files) == 1 and tiny_clip.name.replace(":", "_").split("@")[0] in files[0].name

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    with monkeypatch.context() as patch:
        patch.setattr(interpret, "_encode_token_ids", fail)
        second = vocab_embeddings(tiny_clip, limit=30)
    assert torch.equal(first.embeddings, second.embeddings)

    # other weights under the same name must not reuse the cache
    with torch.no_grad():
        tiny_clip.model.token_embedding.weight.add_(0.1)
    try:
        third = vocab_embeddings(tiny_clip, limit=30)
    finally:
        with torch.no_grad():
            tiny_clip.model.token_embedding.weight.sub_(0.1)
    assert not torch.allclose(third.embeddings, first.embeddings)
    assert len(list(interpret.cache_dir().glob("*.safetensors"))) == 2


def test_rank_tokens_closed_form() -> None:
    embeddings = torch.eye(6)
    vocab = VocabEmbeddings([f"w{i}</w>" for i in range(6)], embeddings)
    direction = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    ranking = rank_tokens(direction, vocab, top_k=2)
    norm = direction.norm().item()
    assert [t for t, _ in ranking.most] == ["w0</w>", "w1</w>"]
    assert [t for t, _ in ranking.least] == ["w5</w>", "w4</w>"]
    assert ranking.most[0][1] == pytest.approx(3.0 / norm)
    assert ranking.least[0][1] == pytest.approx(-2.0 / norm)
    with pytest.raises(ValueError, match="does not match"):
        rank_tokens(torch.ones(5), vocab)


def test_display_token() -> None:
    assert display_token("sunset</w>") == "sunset"
    assert display_token("sun") == "sun-"
    assert display_token("<start_of_text>") == "<start_of_text>"
    # byte-level pieces are shown as text: the two UTF-8 bytes of "é" (0xC3 0xA9)
    assert display_token("\u00c3\u00a9</w>") == "\u00e9"


def test_plot_ranking_writes_png(tmp_path: Path) -> None:
    vocab = VocabEmbeddings([f"w{i}</w>" for i in range(6)], torch.eye(6))
    ranking = rank_tokens(torch.arange(6.0) - 2.5, vocab, top_k=3)
    path = tmp_path / "sub" / "bars.png"
    plot_ranking(ranking, path, title="test")
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in path.parent.iterdir()] == ["bars.png"]  # no temporary left


@pytest.mark.slow
def test_random_vit_b32_returns_k_valid_tokens_each_way() -> None:
    """The real architecture of the paper (random weights: no download is possible here)."""
    from rave.encoders import create_encoder

    encoder = create_encoder("clip:ViT-B-32@random")
    vocab = vocab_embeddings(encoder, limit=300, use_cache=False)
    direction = torch.randn(encoder.embed_dim, generator=torch.Generator().manual_seed(0))
    ranking = rank_tokens(direction, vocab, top_k=7)
    valid = set(encoder.tokenizer.decoder.values())
    for side in (ranking.most, ranking.least):
        assert len(side) == 7
        assert all(token in valid for token, _ in side)
    most = [s for _, s in ranking.most]
    least = [s for _, s in ranking.least]
    assert most == sorted(most, reverse=True) and least == sorted(least)
    assert min(most) >= max(least)
    assert not {t for t, _ in ranking.most} & {t for t, _ in ranking.least}


def _residual_file(encoder, path: Path) -> None:
    from rave.guidance.residual import ResidualVector, save_residual

    v_w = F.normalize(torch.randn(encoder.embed_dim), dim=0)
    v_b = F.normalize(torch.randn(encoder.embed_dim), dim=0)
    r = F.normalize(v_w - v_b, dim=0)
    rv = ResidualVector(r, float(v_w @ r), v_w, v_b, encoder.name, 1, 1, 0, "0" * 64, "now")
    save_residual(rv, path)


def test_interpret_cli_residual_and_prompts(tiny_clip, tmp_path: Path) -> None:
    from rave.cli import main
    from rave.training.methods.clip_lit import save_prompt_features

    residual = tmp_path / "r.pt"
    _residual_file(tiny_clip, residual)
    plot = tmp_path / "bars.png"
    args = ["interpret", str(residual), "--top", "4", "--vocab-limit", "200"]
    result = CliRunner().invoke(main, [*args, "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "residual vector" in result.output
    assert len([line for line in result.output.splitlines() if line[:3].strip().isdigit()]) == 4
    assert plot.read_bytes()[:8] == PNG_SIGNATURE

    prompts = tmp_path / "prompts.safetensors"
    features = F.normalize(torch.randn(2, tiny_clip.embed_dim), dim=1)
    save_prompt_features(prompts, features, tiny_clip.name, "clip-lit-latent")
    result = CliRunner().invoke(main, ["interpret", str(prompts), "--vocab-limit", "200"])
    assert result.exit_code == 0, result.output
    assert "positive - negative" in result.output

    wrong = CliRunner().invoke(
        main, ["interpret", str(residual), "--encoder", "clip:ViT-B-32@openai"]
    )
    assert wrong.exit_code != 0 and "space of" in wrong.output
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a file")
    bad = CliRunner().invoke(main, ["interpret", str(junk)])
    assert bad.exit_code != 0 and "junk.pt" in bad.output


def test_interpret_cli_refuses_image_only_encoder(tmp_path: Path) -> None:
    from rave.cli import main
    from rave.training.methods.clip_lit import save_prompt_features

    prompts = tmp_path / "prompts.safetensors"
    save_prompt_features(prompts, torch.eye(2, 1280), "effnet-lite0", "clip-lit-latent")
    result = CliRunner().invoke(main, ["interpret", str(prompts)])
    assert result.exit_code != 0 and "no text encoder" in result.output


def test_vocabulary_cache_is_in_the_one_cache_folder(monkeypatch, tmp_path) -> None:
    from rave.guidance import interpret
    from rave.zoo.download import cache_dir

    monkeypatch.setenv("RAVE_HOME", "~/rave-cache-test")
    assert interpret.cache_dir() == cache_dir() / "vocab"
    assert "~" not in str(interpret.cache_dir())


def test_interpret_cli_plot_path_is_checked_before_the_work(
    tiny_clip, tmp_path: Path, monkeypatch
) -> None:
    import rave.encoders
    from rave.cli import main

    residual = tmp_path / "r.pt"
    _residual_file(tiny_clip, residual)

    def never(*args, **kwargs):
        raise AssertionError("the encoder was loaded before --plot was checked")

    monkeypatch.setattr(rave.encoders, "create_encoder", never)
    (tmp_path / "small.jpg").write_bytes(b"a photo")
    cases = [(tmp_path / "small.jpg" / "bars.png", "parent", "is a file, not a folder")]
    if Path("/proc/self").is_dir():
        cases.append((Path("/proc/bars.png"), "cannot write in /proc", ""))
    for plot, expected, more in cases:
        result = CliRunner().invoke(main, ["interpret", str(residual), "--plot", str(plot)])
        line = one_error_line(result, 2)
        assert line.startswith(f"Error: --plot {plot}: {expected}") and more in line
        assert ".part" not in line
    result = CliRunner().invoke(main, ["interpret", str(residual), "--plot", ""])
    assert "must not be empty" in one_error_line(result, 2)


def test_interpret_cli_failed_plot_write_names_the_plot(tiny_clip, tmp_path: Path) -> None:
    import errno

    from rave.cli import main
    from rave.guidance import interpret

    residual = tmp_path / "r.pt"
    _residual_file(tiny_clip, residual)
    plot = tmp_path / "bars.png"

    def full_disk(*args, **kwargs) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".rave-1-x.part"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(interpret, "plot_ranking", full_disk)
        args = ["interpret", str(residual), "--vocab-limit", "50", "-q", "--plot", str(plot)]
        result = CliRunner().invoke(main, args)
    assert one_error_line(result, 1) == f"Error: cannot write {plot} (no space left on device)"


def test_interpret_cli_ranks_the_vocabulary_rave_shift_removes(
    tiny_clip, tmp_path: Path, monkeypatch
) -> None:
    """By default the tokens are those of the authors' decoded vocabulary, as `rave shift
    --remove-tokens` uses: each id decoded to text, the text re-tokenized and encoded; shown
    as quoted texts. Restated here from the tokenizer and ``encode_text`` directly."""
    import ast
    import re

    import rave.encoders
    from rave.cli import main
    from rave.guidance.residual import load_residual

    residual = tmp_path / "r.pt"
    _residual_file(tiny_clip, residual)
    monkeypatch.setattr(rave.encoders, "create_encoder", lambda *a, **k: tiny_clip)
    args = ["interpret", str(residual), "--top", "4", "--vocab-limit", "300", "--no-cache", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output

    tokenizer = tiny_clip.tokenizer
    texts = list(dict.fromkeys(tokenizer.decode([i]) for i in range(300)))
    with torch.no_grad():
        features = F.normalize(tiny_clip.model.encode_text(tokenizer(texts)).float(), dim=-1)
    scores = features @ F.normalize(load_residual(residual).residual.float(), dim=0)
    score_of = dict(zip(texts, scores.tolist(), strict=True))
    ranked = sorted(scores.tolist(), reverse=True)
    expected = list(zip(ranked[:4], ranked[::-1][:4], strict=True))

    rows = [line for line in result.output.splitlines() if line[:3].strip().isdigit()]
    assert len(rows) == 4
    for row, (top, low) in zip(rows, expected, strict=True):
        # each label is a quoted decoded text; ties ('E' and 'E ' encode alike) in any order
        labels = [ast.literal_eval(q) for q in re.findall(QUOTED, row)]
        assert len(labels) == 2 and all(label in score_of for label in labels), row
        assert [score_of[label] for label in labels] == pytest.approx([top, low], abs=1e-5)
        printed = [float(x) for x in re.findall(r"-?\d+\.\d{4}", row)[-2:]]
        assert printed == pytest.approx([top, low], abs=2e-4)

    # the one-id-per-token vocabulary remains an option, shown as BPE strings
    ids = CliRunner().invoke(main, [*args, "--vocab", "token-ids"])
    assert ids.exit_code == 0, ids.output
    assert "token-ids vocabulary" in ids.output and "'" not in ids.output.split("\n", 2)[2]


def test_plot_ranking_tick_labels_do_not_run_into_each_other(tmp_path: Path, monkeypatch) -> None:
    """Cosines of a real ranking (a few hundredths) once gave ten tick labels 3 px apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    most = [(f"w{i}</w>", 0.0888 - 0.002 * i) for i in range(5)]
    least = [(f"v{i}</w>", -0.0389 + 0.003 * i) for i in range(5)]
    plot_ranking(interpret.TokenRanking(most, least), tmp_path / "bars.png", title="t")
    (figure,) = figures
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        boxes = [
            label.get_window_extent(renderer)
            for label in axis.get_xticklabels()
            if label.get_visible() and label.get_text() and low <= label.get_position()[0] <= high
        ]
        assert len(boxes) >= 3
        gaps = [right.x0 - left.x1 for left, right in itertools.pairwise(boxes)]
        assert min(gaps) > 20, gaps  # pixels between neighbouring labels
    plt.close("all")


def test_interpret_cli_refuses_a_top_whose_two_ends_would_overlap(
    tiny_clip, tmp_path: Path, monkeypatch
) -> None:
    import rave.encoders
    import rave.guidance.shift
    from rave.cli import main

    residual = tmp_path / "r.pt"
    _residual_file(tiny_clip, residual)

    def never(*args, **kwargs):
        raise AssertionError("the encoder was loaded before --top was checked")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rave.encoders, "create_encoder", never)
        args = ["interpret", str(residual), "--top", "6", "--vocab-limit", "10"]
        line = one_error_line(CliRunner().invoke(main, args), 2)
    assert "--top 6" in line and "--vocab-limit 10" in line
    # without --vocab-limit, the vocabulary's own size (10 entries here) is the bound
    ten = VocabEmbeddings([f"t{i}</w>" for i in range(10)], torch.eye(10, tiny_clip.embed_dim))
    monkeypatch.setattr(rave.encoders, "create_encoder", lambda *a, **k: tiny_clip)
    monkeypatch.setattr(rave.guidance.shift, "build_vocabulary", lambda *a, **k: ten)
    result = CliRunner().invoke(main, ["interpret", str(residual), "--top", "6"])
    assert "--top 6" in one_error_line(result, 2) and "most aligned" not in result.output
    result = CliRunner().invoke(main, ["interpret", str(residual), "--top", "5"])
    assert result.exit_code == 0, result.output  # 5 + 5 distinct tokens
