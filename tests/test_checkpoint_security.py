"""Checkpoints never run pickled code, and damaged files give one clear error.

Each malicious file carries a payload that creates a marker file when unpickled. A control
test proves the payload is live (an unsafe ``torch.load`` does create the marker), so the
tests that expect no marker can fail.
"""

from __future__ import annotations

import builtins
import importlib.util
import pathlib
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rave import zoo
from rave.network import CheckpointError, load_checkpoint_file


class _TouchPayload:
    """Unpickling calls ``pathlib.Path.touch(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


class _ExecPayload:
    """Unpickling calls ``exec`` on source that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _torch_zip(path: Path, payload: object, state: dict) -> None:
    torch.save({**state, "extra": payload}, path)


def _nested(path: Path, payload: object, state: dict) -> None:
    torch.save({"model": state, "step": 1, "optimizer": payload}, path)


def _raw_pickle(protocol: int) -> Callable[[Path, object, dict], None]:
    def write(path: Path, payload: object, state: dict) -> None:
        with open(path, "wb") as f:
            pickle.dump({"model": payload}, f, protocol=protocol)

    return write


WRITERS = {
    "torch-zip": _torch_zip,
    "nested-in-training-checkpoint": _nested,
    "raw-pickle-protocol-0": _raw_pickle(0),
    "raw-pickle-protocol-2": _raw_pickle(2),
    "raw-pickle-protocol-5": _raw_pickle(5),
}
PAYLOADS = {"path-touch": _TouchPayload, "exec": _ExecPayload}


@pytest.fixture
def state(checkpoints_dir: Path) -> dict[str, torch.Tensor]:
    raw = torch.load(checkpoints_dir / "rave_unpaired.pth", "cpu", weights_only=True)
    return {k.removeprefix("module."): v for k, v in raw.items()}


def _evil_file(tmp_path: Path, writer: str, payload: str, state: dict, name: str) -> Path:
    marker = tmp_path / f"pwned-{writer}-{payload}"
    path = tmp_path / name
    WRITERS[writer](path, PAYLOADS[payload](marker), state)
    return path


def _marker(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("pwned-*"))


@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("writer", WRITERS)
def test_payload_is_live_under_an_unsafe_load(
    writer: str, payload: str, state: dict, tmp_path: Path
) -> None:
    """Control: without weights_only the payload runs, so the other tests mean something."""
    path = _evil_file(tmp_path, writer, payload, state, "control.pth")
    if writer.startswith("raw"):
        with open(path, "rb") as f:
            pickle.load(f)
    else:
        torch.load(path, "cpu", weights_only=False)
    assert len(_marker(tmp_path)) == 1


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", PAYLOADS)
@pytest.mark.parametrize("writer", WRITERS)
def test_malicious_checkpoint_is_refused_without_running_it(
    writer: str, payload: str, state: dict, tmp_path: Path
) -> None:
    path = _evil_file(tmp_path, writer, payload, state, "evil.pth")
    with pytest.raises(CheckpointError) as err:
        zoo.load_enhancer(path)
    message = str(err.value)
    assert message.startswith(f"{path}: refused to load")
    assert "pickled" in message or "pickles" in message
    assert "\n" not in message
    assert _marker(tmp_path) == []


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ""])
def test_malicious_pickle_under_another_suffix_is_refused(
    suffix: str, state: dict, tmp_path: Path
) -> None:
    path = _evil_file(tmp_path, "torch-zip", "path-touch", state, f"evil{suffix}")
    with pytest.raises(CheckpointError, match=f"^{path}: "):
        zoo.load_enhancer(path)
    assert _marker(tmp_path) == []


def test_malicious_file_in_the_cache_is_never_loaded(
    state: dict, tmp_path: Path, isolated_model_cache: Path
) -> None:
    """A tampered cached file fails the pinned hash before it is unpickled."""
    evil = _evil_file(tmp_path, "torch-zip", "exec", state, "evil.pth")
    cached = isolated_model_cache / "rave_unpaired-21fb4300.pth"
    shutil.copyfile(evil, cached)
    with pytest.raises(zoo.ModelUnavailableError):
        zoo.load_enhancer("rave-unpaired")
    assert _marker(tmp_path) == []
    assert not cached.exists()


def test_malicious_download_is_discarded_unopened(
    state: dict, tmp_path: Path, isolated_model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import rave.zoo.download as zoo_download

    data = _evil_file(tmp_path, "torch-zip", "path-touch", state, "evil.pth").read_bytes()

    response = io.BytesIO(data)
    response.headers = {"Content-Length": str(len(data))}  # type: ignore[attr-defined]
    monkeypatch.delenv("RAVE_OFFLINE")
    monkeypatch.setattr(zoo_download, "urlopen", lambda request, timeout=None: response)
    with pytest.raises(zoo.ChecksumError):
        zoo.load_enhancer("clip-lit")
    assert _marker(tmp_path) == []
    assert list(isolated_model_cache.iterdir()) == []


def test_python_enhance_api_refuses_a_malicious_model(state: dict, tmp_path: Path) -> None:
    """``rave.enhance(image, model=PATH)`` loads through the same safe path."""
    if importlib.util.find_spec("rave.api") is None:
        pytest.skip("rave.api is not present in this checkout")
    from rave.api import get_model

    evil = _evil_file(tmp_path, "torch-zip", "path-touch", state, "evil.pth")
    with pytest.raises(CheckpointError, match="refused to load"):
        get_model(evil)
    assert _marker(tmp_path) == []


def test_enhance_command_refuses_a_malicious_model(state: dict, tmp_path: Path) -> None:
    """``rave enhance --model PATH`` goes through the same safe loading."""
    if importlib.util.find_spec("rave.cli.enhance") is None:
        pytest.skip("rave.cli.enhance is not present in this checkout")
    import click
    from PIL import Image

    from rave.cli import main

    evil = _evil_file(tmp_path, "torch-zip", "exec", state, "evil.pth")
    image = tmp_path / "in.png"
    Image.new("RGB", (8, 8), (40, 30, 20)).save(image)
    args = ["enhance", "--model", str(evil), str(image)]
    # Give an output folder if the command has such an option, whatever it is called.
    command = main.get_command(click.Context(main), "enhance")
    for param in command.params:
        if isinstance(param, click.Option) and param.name in ("output", "output_dir", "out"):
            args += [param.opts[0], str(tmp_path / "out")]
            break
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "refused to load" in result.output
    assert _marker(tmp_path) == []
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- damaged or foreign files ---------------------------------------------------------


def _write_damaged(kind: str, path: Path, checkpoints_dir: Path) -> None:
    original = (checkpoints_dir / "rave_unpaired.pth").read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(original[: len(original) // 2])
    elif kind == "text":
        path.write_text("this is not a checkpoint\n")
    elif kind == "text-starting-with-h":
        path.write_text("hello\n")
    elif kind == "random-bytes":
        path.write_bytes(bytes(range(256)) * 8)
    elif kind == "png":
        from PIL import Image

        Image.new("RGB", (4, 4)).save(path, format="PNG")


DAMAGED = ["empty", "truncated", "text", "text-starting-with-h", "random-bytes", "png"]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("kind", DAMAGED)
def test_damaged_file_gives_one_clear_error(
    kind: str, suffix: str, checkpoints_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / f"{kind}{suffix}"
    _write_damaged(kind, path, checkpoints_dir)
    with pytest.raises(CheckpointError) as err:
        zoo.load_enhancer(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message and len(message) < 400
    if kind == "empty":
        assert "empty file" in message
    elif suffix == ".safetensors":
        assert "not a valid safetensors file" in message
    elif kind == "png":
        assert "a PNG image, not a weights file" in message
    else:
        assert "refused to load" in message or "not a readable PyTorch checkpoint" in message


@pytest.mark.parametrize(
    "content, expected",
    [
        (torch.zeros(3), "expected a dict of tensors, found Tensor"),
        ([torch.zeros(3)], "expected a dict of tensors, found list"),
        ({"step": 3, "lr": 0.1}, "no enhancement-network state_dict found"),
        ({"model": {}}, "no enhancement-network state_dict found"),
    ],
)
def test_checkpoint_without_weights_is_explained(
    content: object, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=expected):
        zoo.load_enhancer(path)


def test_load_checkpoint_file_refuses_directories(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="a folder, not a checkpoint file"):
        load_checkpoint_file(tmp_path)


def test_torch_load_is_called_only_by_the_one_safe_loader() -> None:
    """Every ``.pt``/``.pth`` reader goes through ``rave.network.checkpoint.load_torch_payload``."""
    import ast

    source_root = Path(__file__).resolve().parents[1] / "src" / "rave"
    callers = set()
    for path in source_root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                callers.add(str(path.relative_to(source_root)))
    assert callers == {"network/checkpoint.py"}


@pytest.mark.parametrize("reader", ["residual", "prompts"])
def test_residual_and_prompt_readers_refuse_malicious_files(
    reader: str, state: dict, tmp_path: Path
) -> None:
    from rave.guidance.residual import load_residual
    from rave.training.methods.clip_lit import load_prompt_features

    path = _evil_file(tmp_path, "torch-zip", "path-touch", state, "evil.pt")
    load = load_residual if reader == "residual" else load_prompt_features
    with pytest.raises(ValueError, match="refused to load"):
        load(path)
    assert _marker(tmp_path) == []


def test_weights_of_another_network_say_what_differs_in_one_short_line(tmp_path: Path) -> None:
    from rave.network.enhancer import EnhancementNet

    weights = EnhancementNet().state_dict()
    renamed = {f"backbone.{key}": value for key, value in weights.items()}  # another model
    reshaped = dict(weights)
    first = next(key for key, value in weights.items() if value.ndim == 4)
    reshaped[first] = torch.zeros(7, *weights[first].shape[1:])
    expected_shape = "x".join(map(str, weights[first].shape))
    renamed_says = r"\d+ missing, e\.g\. '.+'; \d+ unexpected, e\.g\. 'backbone\."
    reshaped_says = (
        rf"1 of another shape, e\.g\. '{re.escape(first)}' is 7x.+ in the file, "
        rf"{expected_shape} in the network"
    )
    for name, state, expected in (
        ("renamed.pth", renamed, renamed_says),
        ("reshaped.pth", reshaped, reshaped_says),
    ):
        torch.save(state, tmp_path / name)
        with pytest.raises(CheckpointError, match=expected) as err:
            zoo.load_enhancer(tmp_path / name)
        message = str(err.value)
        assert message.startswith(f"{tmp_path / name}: weights do not match")
        assert "\n" not in message and len(message) < 250, message


@pytest.mark.parametrize("suffix", [".jpg", ".pt"])
def test_a_photo_given_as_the_model_is_named_as_such(tmp_path: Path, suffix: str) -> None:
    from PIL import Image

    path = tmp_path / f"holiday{suffix}"
    Image.new("RGB", (8, 8)).save(path, format="JPEG")
    with pytest.raises(CheckpointError, match=r"a JPEG image, not a weights file \(models are"):
        zoo.load_enhancer(path)
    # The first bytes of PyTorch's own format are never taken for an image.
    torch.save({"w": torch.zeros(2)}, tmp_path / "real.pt")
    assert set(load_checkpoint_file(tmp_path / "real.pt")) == {"w"}
