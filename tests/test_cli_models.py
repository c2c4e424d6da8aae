"""``rave models``: the listing, cache status, and ``--download`` (served locally, no network)."""

from __future__ import annotations

import hashlib
import io
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import rave.zoo.download as zoo_download
from rave.cli import main

# The authors' file for each name (../shared/README.md), independent of the registry.
NAME_TO_FILE = {
    "rave-unpaired": "rave_unpaired.pth",
    "rave-paired": "rave_paired.pth",
    "rave-unpaired-shifted": "rave_unpaired_shifted.pth",
    "clip-lit-unpaired": "clip_lit_unpaired.pth",
    "clip-lit-paired": "clip_lit_paired.pth",
    "clip-lit-latent-unpaired": "clip_lit_latent_unpaired.pth",
    "clip-lit-latent-paired": "clip_lit_latent_paired.pth",
    "clip-lit": "clip_lit_original.pth",
}
ALL_NAMES = ["default", *NAME_TO_FILE]


def _cache_name(source: Path) -> str:
    return f"{source.stem}-{hashlib.sha256(source.read_bytes()).hexdigest()[:8]}.pth"


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["models", *args])


def _statuses(output: str) -> dict[str, str]:
    """``{name: status}`` from the table rows (status is one or two words)."""
    rows = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in ALL_NAMES:
            two = " ".join(words[1:3])
            rows[words[0]] = two if two in ("not cached", "not shipped", "built in") else words[1]
    return rows


@pytest.fixture
def serve_checkpoints(monkeypatch: pytest.MonkeyPatch, checkpoints_dir: Path) -> list[str]:
    """Online, with every zoo URL answered from ../shared; returns the URLs opened."""
    from rave import zoo

    files = {
        zoo.get_model_info(name).url: (checkpoints_dir / filename).read_bytes()
        for name, filename in NAME_TO_FILE.items()
    }
    opened: list[str] = []

    def fake_urlopen(request, timeout=None):
        opened.append(request.full_url)
        response = io.BytesIO(files[request.full_url])
        response.headers = {"Content-Length": str(len(files[request.full_url]))}
        return response

    monkeypatch.delenv("RAVE_OFFLINE")
    monkeypatch.setattr(zoo_download, "urlopen", fake_urlopen)
    return opened


def test_models_is_listed_by_rave_help() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "models" in result.output


def test_lists_all_nine_names_with_description_and_cache_folder(
    isolated_model_cache: Path,
) -> None:
    result = _run()
    assert result.exit_code == 0, result.output
    assert str(isolated_model_cache) in result.output
    statuses = _statuses(result.output)
    assert list(statuses) == ALL_NAMES
    assert statuses["default"] == "built in"  # src/rave/zoo/weights/default.safetensors
    assert all(statuses[name] == "not cached" for name in NAME_TO_FILE)
    assert "RAVE, unpaired" in result.output and "DIV2K" in result.output


def test_default_is_reported_not_shipped_without_its_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rave import zoo

    monkeypatch.setattr(zoo, "_builtin_weights_dir", lambda: tmp_path)
    assert _statuses(_run().output)["default"] == "not shipped"


def test_status_changes_once_a_file_is_in_the_cache(
    checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    assert _statuses(_run().output)["clip-lit"] == "not cached"
    source = checkpoints_dir / "clip_lit_original.pth"
    shutil.copyfile(source, isolated_model_cache / _cache_name(source))

    statuses = _statuses(_run().output)
    assert statuses["clip-lit"] == "cached"
    assert statuses["clip-lit-paired"] == "not cached"


def test_a_damaged_cached_file_is_shown_as_corrupt(isolated_model_cache: Path) -> None:
    (isolated_model_cache / "rave_paired-3d4e27ee.pth").write_bytes(b"damaged")
    assert _statuses(_run().output)["rave-paired"] == "corrupt"


def test_verbose_shows_url_hash_and_file(isolated_model_cache: Path) -> None:
    result = _run("-v", "rave-unpaired")
    assert result.exit_code == 0
    assert list(_statuses(result.output)) == ["rave-unpaired"]
    assert "https://github.com/Atmyre/RAVE/raw/main/pretrained_models/rave_unpaired.pth" in (
        result.output
    )
    assert "21fb43004af7de2e1782b5799fbaa91dc62ca2730134229323bceab53370742c" in result.output
    assert str(isolated_model_cache / "rave_unpaired-21fb4300.pth") in result.output


def test_download_prefetches_into_the_cache(
    serve_checkpoints: list[str], checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    result = _run("--download", "rave-unpaired-shifted", "clip-lit")
    assert result.exit_code == 0, result.output
    assert len(serve_checkpoints) == 2
    for filename in ("rave_unpaired_shifted.pth", "clip_lit_original.pth"):
        source = checkpoints_dir / filename
        cached = isolated_model_cache / _cache_name(source)
        assert cached.read_bytes() == source.read_bytes()
        assert str(cached) in result.output
    statuses = _statuses(_run().output)
    assert statuses["rave-unpaired-shifted"] == statuses["clip-lit"] == "cached"
    assert statuses["rave-paired"] == "not cached"


def test_download_all_fetches_every_released_model(
    serve_checkpoints: list[str], isolated_model_cache: Path
) -> None:
    result = _run("--download", "all")
    assert result.exit_code == 0, result.output
    assert len(serve_checkpoints) == 8
    statuses = _statuses(_run().output)
    assert all(statuses[name] == "cached" for name in NAME_TO_FILE)
    assert len(list(isolated_model_cache.iterdir())) == 8


def test_download_offline_reports_each_failure_and_carries_on(
    checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    source = checkpoints_dir / "rave_paired.pth"
    shutil.copyfile(source, isolated_model_cache / _cache_name(source))
    result = _run("--download", "clip-lit-paired", "rave-paired")
    assert result.exit_code == 1
    assert str(isolated_model_cache / "clip_lit_paired-5c3e14b3.pth") in result.output
    assert "RAVE_OFFLINE" in result.output
    assert f"rave-paired: {isolated_model_cache / _cache_name(source)}" in result.output
    assert "could not download: clip-lit-paired" in result.output


def test_download_without_names_is_a_usage_error() -> None:
    result = _run("--download")
    assert result.exit_code == 2
    assert "name the models to download" in result.output


def test_unknown_name_is_a_usage_error_with_suggestion() -> None:
    result = _run("clip-lit-latnet-paired")
    assert result.exit_code == 2
    assert "Did you mean 'clip-lit-latent-paired'" in result.output
