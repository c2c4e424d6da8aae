"""Defects found by an audit of rave export, the model zoo, rave models and rave env.

Downloads go to a real HTTP server on localhost (the real ``urlopen`` path: headers,
a connection closed early); nothing leaves the machine.
"""

from __future__ import annotations

import dataclasses
import errno
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import rave.io.atomic
from rave import zoo
from rave.cli import main

PAYLOAD = bytes(range(256)) * 64  # 16 KiB: stands in for a checkpoint
HTML = b"<html><body>Please sign in to the Wi-Fi</body></html>"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/cut-short.pth":
            # Announces the whole file, sends half of it, then closes the connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 2])
            self.close_connection = True
        elif self.path == "/no-length.pth":  # the body ends when the connection closes
            self.send_response(200)
            self.end_headers()
            self.wfile.write(PAYLOAD)
            self.close_connection = True
        elif self.path == "/login.pth":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(HTML)))
            self.end_headers()
            self.wfile.write(HTML)
        else:
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Base URL of a local server; downloads allowed for the test."""
    monkeypatch.delenv("RAVE_OFFLINE", raising=False)
    with ThreadingHTTPServer(("127.0.0.1", 0), _Handler) as httpd:
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{httpd.server_address[1]}"
        finally:
            httpd.shutdown()


def _entry(url: str) -> zoo.ModelInfo:
    import hashlib

    info = zoo.get_model_info("rave-paired")
    return dataclasses.replace(
        info, url=url, sha256=hashlib.sha256(PAYLOAD).hexdigest(), size=len(PAYLOAD)
    )


# --- the zoo ----------------------------------------------------------------------------


def test_download_cut_short_says_so_and_is_not_a_checksum_error(
    server: str, isolated_model_cache: Path
) -> None:
    """Before: http.client returned b"" at the early close, so a transfer cut short read as
    "sha256 ... changed upstream or damaged in transit" (a ChecksumError)."""
    with pytest.raises(zoo.ModelUnavailableError) as err:
        zoo.fetch(_entry(f"{server}/cut-short.pth"), progress=False)
    assert f"after {len(PAYLOAD) // 2} of {len(PAYLOAD)} bytes" in str(err.value)
    assert not isinstance(err.value, zoo.ChecksumError)
    assert list(isolated_model_cache.iterdir()) == []


def test_checksum_error_says_what_was_received(server: str, isolated_model_cache: Path) -> None:
    """A captive portal's login page: the message says it was 54 bytes of text/html."""
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.fetch(_entry(f"{server}/login.pth"), progress=False)
    assert f"({len(HTML)} bytes of text/html)" in str(err.value)
    assert list(isolated_model_cache.iterdir()) == []


def test_whole_download_still_lands_in_the_cache(server: str, isolated_model_cache: Path) -> None:
    path = zoo.fetch(_entry(f"{server}/w.pth"), progress=False)
    assert path.read_bytes() == PAYLOAD


def test_cache_folder_without_write_permission_is_named_before_any_download(
    server: str, isolated_model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: "download failed: [Errno 13] Permission denied: '.../.rave-1-x.part'" and
    the advice to download again, for a cache folder this user cannot write in."""
    real = rave.io.atomic._temporary_in

    def refuse(folder: Path, *args: object, **kwargs: object):
        if Path(folder) == isolated_model_cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(folder))
        return real(folder, *args, **kwargs)  # pyright: ignore[reportArgumentType]

    monkeypatch.setattr(rave.io.atomic, "_temporary_in", refuse)
    with pytest.raises(zoo.ZooError) as err:
        zoo.fetch(_entry(f"{server}/w.pth"), progress=False)
    message = str(err.value)
    assert f"model cache {isolated_model_cache} (RAVE_HOME) cannot be written" in message
    assert "Permission denied" in message and "download failed" not in message


@pytest.mark.parametrize("path", ["/w.pth", "/no-length.pth"])
def test_a_download_larger_than_the_pinned_size_is_stopped(
    path: str, server: str, isolated_model_cache: Path
) -> None:
    """Before: the zoo read whatever the URL sent to the end (a wrong or hostile URL could
    fill the disk) and only then compared the hash."""
    info = dataclasses.replace(_entry(f"{server}{path}"), size=1000)
    with pytest.raises(zoo.ChecksumError) as err:
        zoo.fetch(info, progress=False)
    if path == "/w.pth":  # announced with Content-Length: not read at all
        assert f"offers {len(PAYLOAD)} bytes" in str(err.value)
    else:
        assert "passed the expected 1000 bytes" in str(err.value)
    assert list(isolated_model_cache.iterdir()) == []


def test_every_released_model_pins_its_size(checkpoints_dir: Path) -> None:
    for info in zoo.list_models():
        if not info.builtin:
            source = next(p for p in checkpoints_dir.iterdir() if p.stem == info.stem)
            assert info.size == source.stat().st_size, info.name


# --- rave models --------------------------------------------------------------------------


def test_models_verbose_gives_the_builtin_licence_and_file_sizes(
    checkpoints_dir: Path, isolated_model_cache: Path
) -> None:
    """Before: -v gave every released model's licence but not the built-in one's, and no
    sizes; the table did not say the built-in model is MIT."""
    source = checkpoints_dir / "rave_paired.pth"
    shutil.copyfile(source, isolated_model_cache / "rave_paired-3d4e27ee.pth")
    result = CliRunner().invoke(main, ["models", "-v", "default", "rave-paired"])
    assert result.exit_code == 0, result.output
    assert "source: rave-enhance; licence: MIT" in result.output
    size = f"({source.stat().st_size / 1e6:.2f} MB)"
    assert f"rave_paired-3d4e27ee.pth {size}" in result.output
    table = CliRunner().invoke(main, ["models"]).output
    assert re.search(r"^default\s+built in\s+.*MIT$", table, re.MULTILINE)


# --- rave env ---------------------------------------------------------------------------


def test_env_reports_the_extras_cpu_and_rave_variables(
    isolated_model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: no onnx/onnxruntime/safetensors... versions (a bug report about rave export
    lacked them) and no RAVE_* settings (RAVE_WINOGRAD_TILE changes the results)."""
    from importlib import metadata

    monkeypatch.setenv("RAVE_WINOGRAD_TILE", "4")
    result = CliRunner().invoke(main, ["env", "--no-build"])
    assert result.exit_code == 0, result.output
    rows = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.output.splitlines())
    assert rows["onnx"] == metadata.version("onnx")
    assert rows["safetensors"] == metadata.version("safetensors")
    assert "RAVE_WINOGRAD_TILE=4" in rows["RAVE_* variables"]
    assert "RAVE_OFFLINE=1" in rows["RAVE_* variables"]
    assert "CPU" in rows


# --- rave export --------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore")
def test_export_of_a_zoo_file_by_path_names_the_model_and_its_licence(
    checkpoints_dir: Path, tmp_path: Path
) -> None:
    """Before: the authors' rave_unpaired.pth by path gave model "rave_unpaired.pth",
    licence "as the checkpoint's (not stated in the file)"."""
    pytest.importorskip("onnx")
    from rave.export import export_onnx

    proto = export_onnx(checkpoints_dir / "rave_unpaired.pth", tmp_path / "m.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "rave-unpaired (rave_unpaired.pth)"
    assert props["licence"] == zoo.get_model_info("rave-unpaired").licence


def test_float16_keeps_weights_beyond_its_range_in_float32() -> None:
    """Before: a weight above 65504 became inf in the file (NaN light maps)."""
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from rave.export.onnx_model import _weights_to_float16

    big = numpy_helper.from_array(np.array([1e5, 1.0], np.float32), "big")
    small = numpy_helper.from_array(np.array([0.5, 1.0], np.float32), "small")
    node = helper.make_node("Add", ["big", "small"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        [big, small],
    )
    model = helper.make_model(graph)
    _weights_to_float16(model)
    stored = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert stored["big"].dtype == np.float32 and stored["big"][0] == np.float32(1e5)
    assert stored["small__float16"].dtype == np.float16
    assert np.isfinite(stored["big"]).all()


@pytest.fixture
def undeletable_damaged_copy(isolated_model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A damaged cached copy of rave-paired in a cache that refuses to remove it (read-only:
    simulated, as the tests run as root)."""
    cached = isolated_model_cache / "rave_paired-3d4e27ee.pth"
    cached.write_bytes(b"damaged")
    real_unlink = Path.unlink

    def refuse(self: Path, missing_ok: bool = False) -> None:
        if self == cached:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", refuse)
    return cached


def test_corrupt_cached_file_that_cannot_be_removed_is_one_zoo_error(
    undeletable_damaged_copy: Path,
) -> None:
    """Before: a read-only cache holding a damaged copy raised a raw PermissionError from
    unlink, which rave export reported as 'cannot write OUTPUT (permission denied)'."""
    cached = undeletable_damaged_copy
    with pytest.raises(zoo.ZooError) as err:
        zoo.model_path("rave-paired")
    message = str(err.value)
    assert str(cached) in message and "corrupt" in message
    assert "cannot be removed (Permission denied)" in message


def test_export_cli_names_the_cache_file_not_the_output(
    undeletable_damaged_copy: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    cached = undeletable_damaged_copy
    output = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", "rave-paired", "-o", str(output)])
    assert result.exit_code == 1, result.output
    assert str(cached) in result.output and f"cannot write {output}" not in result.output


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("RAVE-UNPAIRED", "rave-unpaired"),  # before: no suggestion at all
        ("rave_unpaired", "rave-unpaired"),  # before: three suggestions
        (
            "clip_lit_original",
            "clip-lit",
        ),  # the authors' file name; before: clip-lit-unpaired first
    ],
)
def test_a_name_that_differs_only_in_spelling_gets_that_one_suggestion(
    typed: str, meant: str
) -> None:
    with pytest.raises(zoo.UnknownModelError) as err:
        zoo.get_model_info(typed)
    assert f"Did you mean {meant!r}? Known models" in str(err.value)


def test_env_and_models_say_when_the_cache_folder_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: both printed the path of a cache under a file as if it were fine; every
    download then failed."""
    (tmp_path / "blocker").write_text("a file")
    monkeypatch.setenv("RAVE_HOME", str(tmp_path / "blocker" / "cache"))
    env = CliRunner().invoke(main, ["env", "--no-build"])
    assert f"(unusable: {tmp_path / 'blocker'} is a file, not a folder" in env.output
    models = CliRunner().invoke(main, ["models"])
    assert "The model cache cannot take downloads" in models.output
    monkeypatch.setenv("RAVE_HOME", str(tmp_path / "not" / "yet"))  # created when needed
    assert "unusable" not in CliRunner().invoke(main, ["env", "--no-build"]).output


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("rave_unpaired.pth", "'rave-unpaired' (downloaded on first use)"),
        ("rave_unpaired-21fb4300.pth", "'rave-unpaired' (downloaded on first use)"),
        ("default.safetensors", "'default' (built in)"),
    ],
)
def test_missing_file_named_like_a_model_points_to_that_name(
    typed: str, meant: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: 'rave_unpaired.pth: no such checkpoint file' and nothing more, for the
    authors' file name or the cache's, when the user meant the zoo's model."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(zoo.CheckpointError) as err:
        zoo.load_enhancer(typed)
    assert f"no such checkpoint file; to use the model of that name pass {meant}" in str(err.value)
    with pytest.raises(zoo.CheckpointError) as other:
        zoo.load_enhancer("my_run.pth")
    assert str(other.value) == "my_run.pth: no such checkpoint file"


@pytest.mark.filterwarnings("ignore")
def test_export_of_a_training_checkpoint_records_its_run(tmp_path: Path) -> None:
    """Before: every run's best.pt exported as model "best.pt" and nothing else to tell
    them apart but the sha256."""
    pytest.importorskip("onnx")
    import json

    import torch

    from rave.export import export_onnx

    state = zoo.load_enhancer("default").state_dict()
    checkpoint = tmp_path / "best.pt"
    torch.save(
        {
            "format": "rave-train/2/best",
            "model": state,
            "best_info": {"iteration": 4200, "stage": "round 2"},
            "method_name": "rave",
            "config": {"guidance_encoder": "effnet-lite0"},
        },
        checkpoint,
    )
    proto = export_onnx(checkpoint, tmp_path / "m.onnx")
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "best.pt"
    assert json.loads(props["training"]) == {
        "format": "rave-train/2/best",
        "method": "rave",
        "iteration": 4200,
        "stage": "round 2",
        "guidance_encoder": "effnet-lite0",
    }


def test_ctrl_c_exits_130_in_models_download_and_export(
    isolated_model_cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before: click's "Aborted!" and exit status 1, where rave's other commands exit 130."""
    import rave.export

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "fetch", interrupted)
    result = CliRunner().invoke(main, ["models", "--download", "rave-paired"])
    assert result.exit_code == 130, result.output
    assert "interrupted: rave-paired was not kept" in result.output

    monkeypatch.setattr(rave.export, "export_onnx", interrupted)
    output = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", "default", "-o", str(output)])
    assert result.exit_code == 130, result.output
    assert f"interrupted: {output} was not written" in result.output
    assert not output.exists()


@pytest.mark.parametrize("quiet", [False, True])
def test_quiet_hides_the_download_progress_bar(
    server: str,
    isolated_model_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    quiet: bool,
    tmp_path: Path,
) -> None:
    """``rave enhance -q`` promises no progress bars; the bar of a model fetched on first use
    was still drawn (rave.Enhancer fetched it with the default progress=True). The payload
    is no checkpoint: loading it fails after the download, which is all this test needs."""
    from PIL import Image

    from rave.zoo import registry

    monkeypatch.setitem(registry.MODELS, "rave-paired", _entry(f"{server}/w.pth"))
    photo = tmp_path / "p.png"
    Image.new("RGB", (8, 8), (40, 20, 10)).save(photo)
    args = ["enhance", str(photo), "-o", str(tmp_path / "out"), "--model", "rave-paired"]
    result = CliRunner().invoke(main, args + (["-q"] if quiet else []))
    assert result.exit_code == 2  # not a checkpoint: downloaded, then refused
    assert (isolated_model_cache / zoo.cached_path(registry.MODELS["rave-paired"]).name).is_file()
    bar_drawn = "B/s]" in result.output  # tqdm's rate field
    assert bar_drawn is not quiet


@pytest.mark.parametrize("where", ["-", "folder"])
def test_export_output_that_cannot_be_a_file_is_one_usage_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """``-o -`` wrote a file named "-"; ``-o FOLDER`` got click's bare "is a directory"."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    output = "-" if where == "-" else str(tmp_path / "models")
    result = CliRunner().invoke(main, ["export", "default", "-o", output])
    assert result.exit_code == 2
    expected = (
        "standard output is not supported: name the file to write"
        if where == "-"
        else f"{output} is a folder: name the file to write in it"
    )
    assert expected in result.output
    assert not (tmp_path / "-").exists()


def test_a_folder_or_unreadable_file_given_as_model_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder was "no such checkpoint file"; a file without read permission was "not a
    readable PyTorch checkpoint (truncated, corrupt or another kind of file; PermissionError
    ...)". Tests run as root, who reads every file: the refusal is simulated."""
    import builtins

    import rave.network.checkpoint as checkpoint

    run = tmp_path / "run"
    run.mkdir()
    result = CliRunner().invoke(main, ["export", str(run), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2
    assert f"{run}: a folder, not a checkpoint file" in result.output

    locked = tmp_path / "best.pt"
    locked.write_bytes(b"PK\x03\x04 not read")

    def refuse(file: object, *args: object, **kwargs: object) -> object:
        if Path(str(file)) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return builtins.open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(checkpoint, "open", refuse, raising=False)
    with pytest.raises(checkpoint.CheckpointError) as caught:
        checkpoint.load_checkpoint_file(locked)
    assert str(caught.value) == f"{locked}: cannot be read (permission denied)"
