"""The model zoo: names, pinned hashes, cache layout, verified downloads, loading by name/path.

No test touches the network: downloads are served from local copies of the authors'
checkpoints in ../shared by replacing the URL opener.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import HTTPError, URLError

import numpy as np
import platformdirs
import pytest
import torch

import rave
import rave.zoo.download as zoo_download
from rave import zoo
from rave.network import CheckpointError, EnhancementNet, count_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]

# Independent of the registry: the authors' file for each name, as ../shared/README.md lists.
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
RELEASED = list(NAME_TO_FILE)
N_PARAMETERS = 278_790  # docs/method.md, "Enhancement network"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_name(source: Path) -> str:
    """The documented cache naming: ``<stem>-<first 8 hex of sha256>.pth``."""
    return f"{source.stem}-{_sha256(source)[:8]}.pth"


def _populate_cache(cache: Path, checkpoints_dir: Path, names: list[str] = RELEASED) -> None:
    for name in names:
        source = checkpoints_dir / NAME_TO_FILE[name]
        shutil.copyfile(source, cache / _cache_name(source))


def _plain_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in raw.items()}


class _FakeResponse(io.BytesIO):
    """What ``urlopen`` returns: a readable body with headers, usable as a context manager."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAVE_OFFLINE", raising=False)


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch):
    """Replace the URL opener: ``serve({url: bytes})``; returns the list of URLs opened."""
    opened: list[str] = []

    def install(files: dict[str, bytes]) -> list[str]:
        def fake_urlopen(request, timeout=None):
            url = request.full_url
            opened.append(url)
            if url not in files:
                raise URLError("no route to host (test)")
            return _FakeResponse(files[url])

        monkeypatch.setattr(zoo_download, "urlopen", fake_urlopen)
        return opened

    return install


# --- the table --------------------------------------------------------------------------


def test_names_are_the_released_models_plus_default() -> None:
    assert [info.name for info in zoo.list_models()] == ["default", *RELEASED]
    assert zoo.model_names() == ["default", *RELEASED]
    assert all(isinstance(info, zoo.ModelInfo) for info in zoo.list_models())


def test_public_api_is_exported_lazily_from_rave() -> None:
    assert rave.load_enhancer is zoo.load_enhancer
    assert rave.list_models is zoo.list_models


@pytest.mark.parametrize("name", RELEASED)
def test_entry_describes_method_regime_data_and_source(name: str) -> None:
    info = zoo.get_model_info(name)
    assert re.fullmatch(r"[0-9a-f]{64}", info.sha256)
    assert "\n" not in info.description
    regime = "paired" if name.endswith("-paired") else "unpaired"
    assert info.regime == regime
    assert f"{regime}:" in info.description
    assert "BAID" in info.description
    assert ("DIV2K" in info.description) == (regime == "unpaired")
    method = {"rave": "RAVE", "clip-lit-latent": "CLIP-LIT-Latent"}.get(
        name.removesuffix("-shifted").rsplit("-", 1)[0], "CLIP-LIT"
    )
    assert info.description.startswith(method)
    assert info.licence and info.source.startswith("https://github.com/")


@pytest.mark.parametrize("name", RELEASED)
def test_urls_are_the_authors_public_addresses(name: str) -> None:
    info = zoo.get_model_info(name)
    if name == "clip-lit":
        expected = (
            "https://github.com/ZhexinLiang/CLIP-LIT/raw/main/pretrained_models/"
            "enhancement_model.pth"
        )
    else:
        expected = f"https://github.com/Atmyre/RAVE/raw/main/pretrained_models/{NAME_TO_FILE[name]}"
    assert info.url == expected


@pytest.mark.parametrize("name", RELEASED)
def test_pinned_sha256_matches_the_reference_checkpoint(name: str, checkpoints_dir: Path) -> None:
    assert zoo.get_model_info(name).sha256 == _sha256(checkpoints_dir / NAME_TO_FILE[name])


def test_cache_file_naming_is_stem_dash_hash_prefix(isolated_model_cache: Path) -> None:
    info = zoo.get_model_info("rave-unpaired")
    assert zoo.cached_path(info) == isolated_model_cache / "rave_unpaired-21fb4300.pth"
    assert zoo.cached_path(zoo.get_model_info("clip-lit")).name == "clip_lit_original-67aa1bdb.pth"


def test_cache_dir_defaults_to_the_user_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAVE_HOME")
    assert zoo.cache_dir() == Path(platformdirs.user_cache_dir("rave"))


@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), ("0", False), ("", False)])
def test_rave_offline_values(monkeypatch: pytest.MonkeyPatch, value: str, offline: bool) -> None:
    monkeypatch.setenv("RAVE_OFFLINE", value)
    assert zoo.is_offline() is offline


def test_unknown_name_lists_known_names_and_suggests_close_ones() -> None:
    with pytest.raises(zoo.UnknownModelError) as info:
        zoo.load_enhancer("rave-unpiared")
    message = str(info.value)
    assert "'rave-unpiared'" in message
    assert "Did you mean 'rave-unpaired'" in message
    for name in ["default", *RELEASED]:
        assert name in message
    assert isinstance(info.value, ValueError)


# --- loading by name --------------------------------------------------------------------


@pytest.mark.parametrize("name", RELEASED)
def test_every_name_loads_strictly_from_the_cache(
    name: str, checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    _populate_cache(isolated_model_cache, checkpoints_dir, [name])
    net = zoo.load_enhancer(name)
    assert isinstance(net, EnhancementNet)
    assert not net.training
    assert net.padding_mode == "reflect"
    assert count_parameters(net) == N_PARAMETERS
    expected = _plain_state_dict(checkpoints_dir / NAME_TO_FILE[name])
    loaded = net.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_named_model_reproduces_the_reference_light_map(
    golden_dir: Path, checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    # One golden case end to end by name (each costs seconds on a shared 2-core CPU): the
    # entry whose upstream file name (enhancement_model.pth) differs from its cache stem.
    data = np.load(golden_dir / "clip_lit_original__41_301x197.npz")
    name = {v: k for k, v in NAME_TO_FILE.items()}[f"{data['checkpoint']}.pth"]
    _populate_cache(isolated_model_cache, checkpoints_dir, [name])
    net = rave.load_enhancer(name)
    image = torch.from_numpy(data["input"]).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        light_map = net(image)[0, 0].numpy()
    np.testing.assert_allclose(light_map, data["light_map"], atol=1e-5, rtol=0)


def test_model_path_returns_the_verified_cached_file(
    checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    _populate_cache(isolated_model_cache, checkpoints_dir, ["rave-paired"])
    path = zoo.model_path("rave-paired")
    assert path == isolated_model_cache / "rave_paired-3d4e27ee.pth"
    assert path.read_bytes() == (checkpoints_dir / "rave_paired.pth").read_bytes()


def test_offline_and_not_cached_gives_one_clear_error(isolated_model_cache: Path) -> None:
    with pytest.raises(zoo.ModelUnavailableError) as info:
        zoo.load_enhancer("rave-unpaired-shifted")
    message = str(info.value)
    assert "'rave-unpaired-shifted'" in message
    assert (
        "https://github.com/Atmyre/RAVE/raw/main/pretrained_models/rave_unpaired_shifted.pth"
        in (message)
    )
    assert str(isolated_model_cache / "rave_unpaired_shifted-5bcf3fef.pth") in message
    assert "rave models --download rave-unpaired-shifted" in message
    assert "RAVE_OFFLINE" in message
    assert list(isolated_model_cache.iterdir()) == []


def test_download_false_never_fetches(online: None, serve, isolated_model_cache: Path) -> None:
    opened = serve({})
    with pytest.raises(zoo.ModelUnavailableError, match=r"rave_paired-3d4e27ee\.pth"):
        zoo.model_path("rave-paired", download=False)
    assert opened == []


def test_offline_forbids_the_network_even_when_it_works(
    serve, checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    info = zoo.get_model_info("rave-unpaired")
    opened = serve({info.url: (checkpoints_dir / "rave_unpaired.pth").read_bytes()})
    with pytest.raises(zoo.ModelUnavailableError):
        zoo.model_path("rave-unpaired")
    assert opened == []


# --- downloading ------------------------------------------------------------------------


def test_first_use_downloads_verifies_and_then_reuses(
    online: None,
    serve,
    checkpoints_dir: Path,
    isolated_model_cache: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    info = zoo.get_model_info("clip-lit")
    payload = (checkpoints_dir / "clip_lit_original.pth").read_bytes()
    opened = serve({info.url: payload})

    net = zoo.load_enhancer("clip-lit")

    assert opened == [info.url]
    cached = isolated_model_cache / "clip_lit_original-67aa1bdb.pth"
    assert cached.read_bytes() == payload
    assert sorted(p.name for p in isolated_model_cache.iterdir()) == [cached.name]
    assert count_parameters(net) == N_PARAMETERS
    progress = capsys.readouterr().err
    assert cached.name in progress and "B" in progress  # tqdm bar, in bytes

    zoo.load_enhancer("clip-lit")
    assert opened == [info.url]  # second use: from the cache, no network


def test_download_over_a_real_local_http_server(
    online: None, checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    """The real urlopen path (headers, streaming), against a server on localhost."""

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(checkpoints_dir))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            url = f"http://127.0.0.1:{server.server_address[1]}/rave_unpaired.pth"
            info = dataclasses.replace(zoo.get_model_info("rave-unpaired"), url=url)
            path = zoo.fetch(info, progress=False)
        finally:
            server.shutdown()
    assert path == isolated_model_cache / "rave_unpaired-21fb4300.pth"
    assert path.read_bytes() == (checkpoints_dir / "rave_unpaired.pth").read_bytes()


def test_wrong_hash_download_raises_and_leaves_nothing(
    online: None, serve, checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    info = zoo.get_model_info("rave-unpaired")
    serve({info.url: (checkpoints_dir / "rave_paired.pth").read_bytes()})
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.model_path("rave-unpaired")
    assert info.sha256 in str(err.value) and info.url in str(err.value)
    assert list(isolated_model_cache.iterdir()) == []


def test_network_failure_names_url_and_target_path(
    online: None, serve, isolated_model_cache: Path
) -> None:
    serve({})
    with pytest.raises(zoo.ModelUnavailableError) as err:
        zoo.load_enhancer("clip-lit-paired")
    message = str(err.value)
    assert "no route to host" in message
    assert zoo.get_model_info("clip-lit-paired").url in message
    assert str(isolated_model_cache / "clip_lit_paired-5c3e14b3.pth") in message
    assert list(isolated_model_cache.iterdir()) == []


def test_http_error_is_reported_with_its_status(
    online: None, monkeypatch: pytest.MonkeyPatch, isolated_model_cache: Path
) -> None:
    def not_found(request, timeout=None):
        raise HTTPError(request.full_url, 404, "Not Found", {}, None)

    monkeypatch.setattr(zoo_download, "urlopen", not_found)
    with pytest.raises(zoo.ModelUnavailableError, match="HTTP Error 404: Not Found"):
        zoo.model_path("rave-paired")
    assert list(isolated_model_cache.iterdir()) == []


def test_interrupted_download_leaves_no_partial_file(
    online: None, monkeypatch: pytest.MonkeyPatch, isolated_model_cache: Path
) -> None:
    class Broken(_FakeResponse):
        def read(self, size: int = -1) -> bytes:
            if self.tell() > 1000:
                raise ConnectionResetError("connection reset (test)")
            return super().read(min(size, 600))

    monkeypatch.setattr(zoo_download, "urlopen", lambda request, timeout=None: Broken(b"x" * 5000))
    with pytest.raises(zoo.ModelUnavailableError, match="connection reset"):
        zoo.model_path("rave-paired")
    assert list(isolated_model_cache.iterdir()) == []


def test_corrupt_cached_file_is_reported_and_fetched_again(
    online: None,
    serve,
    checkpoints_dir: Path,
    isolated_model_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    info = zoo.get_model_info("clip-lit-latent-paired")
    cached = isolated_model_cache / "clip_lit_latent_paired-8bc9d888.pth"
    cached.write_bytes(b"damaged")
    payload = (checkpoints_dir / "clip_lit_latent_paired.pth").read_bytes()
    opened = serve({info.url: payload})
    with caplog.at_level(logging.WARNING, logger="rave.zoo"):
        assert zoo.model_path(info.name) == cached
    assert opened == [info.url]
    assert cached.read_bytes() == payload
    assert "corrupt" in caplog.text and str(cached) in caplog.text


def test_corrupt_cached_file_offline_is_removed_and_reported(
    isolated_model_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cached = isolated_model_cache / "rave_unpaired-21fb4300.pth"
    cached.write_bytes(b"damaged")
    with (
        caplog.at_level(logging.WARNING, logger="rave.zoo"),
        pytest.raises(zoo.ModelUnavailableError),
    ):
        zoo.load_enhancer("rave-unpaired")
    assert "corrupt" in caplog.text
    assert not cached.exists()


def test_download_file_creates_the_cache_folder(
    serve, checkpoints_dir: Path, tmp_path: Path
) -> None:
    payload = (checkpoints_dir / "rave_paired.pth").read_bytes()
    serve({"https://example.org/w.pth": payload})
    target = tmp_path / "new" / "folder" / "w.pth"
    zoo.download_file(
        "https://example.org/w.pth", target, hashlib.sha256(payload).hexdigest(), progress=False
    )
    assert target.read_bytes() == payload


# --- the built-in ``default`` -----------------------------------------------------------


def test_default_without_shipped_weights_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zoo, "_builtin_weights_dir", lambda: tmp_path)  # a build without them
    with pytest.raises(zoo.BuiltinModelMissingError) as err:
        zoo.load_enhancer("default")
    message = str(err.value)
    assert "no built-in model is shipped" in message
    assert "--model NAME|PATH" in message
    assert "rave-unpaired" in message


def test_builtin_weights_live_in_the_package_data_folder() -> None:
    folder = Path(str(zoo._builtin_weights_dir()))
    assert folder == Path(zoo.__file__).parent / "weights"
    # pyproject's package-data must ship whatever is put in that folder
    assert '"zoo/weights/*"' in (REPO_ROOT / "pyproject.toml").read_text()


@pytest.mark.parametrize("filename", ["default.safetensors", "default.pth"])
def test_default_loads_shipped_weights(
    filename: str, checkpoints_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import save_file

    state = _plain_state_dict(checkpoints_dir / "rave_paired.pth")
    if filename.endswith(".safetensors"):
        save_file(state, tmp_path / filename)
    else:
        torch.save(state, tmp_path / filename)
    monkeypatch.setattr(zoo, "_builtin_weights_dir", lambda: tmp_path)

    assert zoo.model_path("default") == tmp_path / filename
    net = zoo.load_enhancer("default")
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


# --- loading by path --------------------------------------------------------------------


@pytest.fixture
def reference_state(checkpoints_dir: Path) -> dict[str, torch.Tensor]:
    return _plain_state_dict(checkpoints_dir / "rave_unpaired.pth")


def _assert_holds(net: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    assert isinstance(net, EnhancementNet) and not net.training
    assert count_parameters(net) == N_PARAMETERS
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_path_with_module_prefix(checkpoints_dir: Path, reference_state) -> None:
    path = checkpoints_dir / "rave_unpaired.pth"
    assert all(k.startswith("module.") for k in torch.load(path, "cpu", weights_only=True))
    _assert_holds(zoo.load_enhancer(path), reference_state)
    _assert_holds(zoo.load_enhancer(str(path)), reference_state)


@pytest.mark.parametrize("filename", ["stripped.pth", "stripped.pt", "no_suffix"])
def test_path_without_module_prefix(filename: str, tmp_path: Path, reference_state) -> None:
    path = tmp_path / filename
    torch.save(reference_state, path)
    _assert_holds(zoo.load_enhancer(path), reference_state)


def test_safetensors_path(tmp_path: Path, reference_state) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "weights.safetensors"
    save_file(reference_state, path)
    _assert_holds(zoo.load_enhancer(str(path)), reference_state)


def test_nested_training_checkpoint(tmp_path: Path, checkpoints_dir: Path, reference_state) -> None:
    raw = torch.load(checkpoints_dir / "rave_unpaired.pth", "cpu", weights_only=True)
    path = tmp_path / "step_100.pth"
    torch.save({"model": raw, "step": 100, "config": {"lr": 2e-5}}, path)
    _assert_holds(zoo.load_enhancer(path), reference_state)


def test_relative_path_without_separator_loads_existing_file(
    tmp_path: Path, reference_state, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.save(reference_state, tmp_path / "my-weights")
    monkeypatch.chdir(tmp_path)
    _assert_holds(zoo.load_enhancer("my-weights"), reference_state)


def test_known_name_wins_over_a_same_named_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "rave-paired").write_text("not weights")
    monkeypatch.chdir(tmp_path)
    assert not zoo.looks_like_path("rave-paired")
    assert zoo.looks_like_path("./rave-paired")
    with pytest.raises(CheckpointError, match=r"^rave-paired: (refused|not a readable)"):
        zoo.load_enhancer("./rave-paired")


def test_missing_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match=re.escape(f"{missing}: no such checkpoint file")):
        zoo.load_enhancer(missing)


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_mismatched_state_dict_is_refused(change: str, tmp_path: Path, reference_state) -> None:
    state = dict(reference_state)
    if change == "missing":
        del state["ResidualBlock3.conv2.weight"]
        expected = "ResidualBlock3.conv2.weight"
    elif change == "extra":
        state["head.weight"] = torch.zeros(3)
        expected = "head.weight"
    else:
        state["cond1.weight"] = torch.zeros(32, 3, 5, 5)
        expected = "cond1.weight"
    path = tmp_path / f"{change}.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        zoo.load_enhancer(path)
    message = str(err.value)
    assert str(path) in message
    assert "do not match the enhancement network" in message
    assert expected in message


def test_device_argument(checkpoints_dir: Path) -> None:
    net = zoo.load_enhancer(checkpoints_dir / "rave_paired.pth", device=torch.device("cpu"))
    assert {p.device.type for p in net.parameters()} == {"cpu"}


def test_cache_folder_blocked_by_a_file_is_named_before_any_download(
    online: None, serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "home").write_text("a file where the cache folder should be")
    monkeypatch.setenv("RAVE_HOME", str(tmp_path / "home"))
    opened = serve({})
    with pytest.raises(zoo.ZooError, match=r"home \(RAVE_HOME\) is not a folder") as err:
        zoo.model_path("rave-paired")
    assert "download failed" not in str(err.value)
    assert opened == []  # nothing fetched that could not be kept
