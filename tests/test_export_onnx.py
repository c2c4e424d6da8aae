"""rave export: ONNX models with a dynamic image size, checked in ONNX Runtime.

References are independent of the export path: the eager network (which pools with
``nn.AdaptiveAvgPool2d``), the reference implementation's golden outputs, closed forms of
``I / L**S``, and a sha256 computed here.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from _cli_errors import one_error_line

_NEEDS = 'needs the export extra: pip install -e ".[export]"'
onnx = pytest.importorskip("onnx", reason=_NEEDS)
ort = pytest.importorskip("onnxruntime", reason=_NEEDS)

import rave  # noqa: E402
from rave.cli import main  # noqa: E402
from rave.export import export_onnx  # noqa: E402
from rave.inference import predict_light_map  # noqa: E402
from rave.network import EnhancementNet  # noqa: E402
from rave.zoo import builtin_weights_path  # noqa: E402


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def light_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "default.onnx"
    export_onnx("default", path)
    return path


@pytest.fixture(scope="module")
def default_net() -> EnhancementNet:
    return rave.load_enhancer("default")


@pytest.mark.parametrize(("height", "width"), [(2, 2), (7, 9), (517, 333), (3, 40)])
def test_light_map_equals_the_eager_network_at_odd_sizes(
    light_model: Path, default_net: EnhancementNet, height: int, width: int
) -> None:
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.inference_mode():
        expected = default_net.light_map(image).numpy()
    (light,) = _session(light_model).run(None, {"image": image.numpy()})
    assert light.shape == (1, 1, height, width)
    assert np.abs(light - expected).max() <= 1e-4


def test_batches_of_several_images(light_model: Path, default_net: EnhancementNet) -> None:
    image = torch.rand(3, 3, 31, 17, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = default_net.light_map(image).numpy()
    (light,) = _session(light_model).run(None, {"image": image.numpy()})
    assert np.abs(light - expected).max() <= 1e-4


@pytest.mark.slow
def test_light_map_at_1536x2048_equals_the_tiled_engine(light_model: Path) -> None:
    # The eager whole-image network would need 5.6 GB more; the tiled engine equals it to
    # float32 rounding (tests/test_inference.py).
    image = torch.rand(1, 3, 1536, 2048, generator=torch.Generator().manual_seed(2))
    expected = predict_light_map(rave.load_enhancer("default"), image).numpy()
    (light,) = _session(light_model).run(None, {"image": image.numpy()})
    assert np.abs(light - expected).max() <= 1e-4


def test_authors_checkpoint_reproduces_the_golden_outputs(
    tmp_path: Path, golden_dir: Path, checkpoints_dir: Path
) -> None:
    golden = np.load(golden_dir / "clip_lit_original__41_301x197.npz")
    path = tmp_path / "model.onnx"
    export_onnx(checkpoints_dir / f"{golden['checkpoint']}.pth", path, output="enhanced")
    image = golden["input"].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    strength = np.ones(1, np.float32)
    (enhanced,) = _session(path).run(None, {"image": image, "strength": strength})
    assert np.abs(enhanced[0].transpose(1, 2, 0) - golden["enhanced"]).max() <= 1e-4


def test_enhanced_output_is_image_over_light_map_to_the_strength(
    tmp_path: Path, light_model: Path
) -> None:
    path = tmp_path / "enhanced.onnx"
    export_onnx("default", path, output="enhanced", opset=13)
    image = np.random.default_rng(3).random((1, 3, 21, 34), dtype=np.float32)
    image[..., 0, 0] = 0.0  # a black pixel stays black
    (light,) = _session(light_model).run(None, {"image": image})
    session = _session(path)
    for strength in (0.0, 0.5, 1.0):
        (enhanced,) = session.run(None, {"image": image, "strength": np.array([strength], "f")})
        expected = np.clip(np.nan_to_num(image / light**strength, nan=0.0), 0.0, 1.0)
        assert np.abs(enhanced - expected).max() <= 1e-4
    (unchanged,) = session.run(None, {"image": image, "strength": np.zeros(1, "f")})
    assert np.abs(unchanged - image).max() <= 1e-6


def test_float16_weights_halve_the_file_and_stay_close(tmp_path: Path, light_model: Path) -> None:
    path = tmp_path / "half.onnx"
    export_onnx("default", path, float16=True)
    model = onnx.load(str(path))
    floats = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert all(np.prod(i.dims) < 2 for i in floats)  # only scalars stay float32
    assert path.stat().st_size < 0.6 * light_model.stat().st_size
    image = np.random.default_rng(4).random((1, 3, 40, 56), dtype=np.float32)
    (half,) = _session(path).run(None, {"image": image})
    (full,) = _session(light_model).run(None, {"image": image})
    assert half.dtype == np.float32
    assert 0 < np.abs(half - full).max() <= 2e-2


def test_metadata_names_the_model_its_sha256_and_licence(light_model: Path) -> None:
    props = {p.key: p.value for p in onnx.load(str(light_model)).metadata_props}
    weights = builtin_weights_path()
    assert weights is not None
    assert props["model"] == "default"
    assert props["checkpoint_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert props["licence"] == "MIT"
    assert props["output"] == "light"


def test_cli_exports_and_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    runner = CliRunner()
    result = runner.invoke(main, ["export", "default", "-o", str(path), "--opset", "18"])
    assert result.exit_code == 0, result.output
    assert onnx.load(str(path)).opset_import[0].version == 18
    again = runner.invoke(main, ["export", "default", "-o", str(path)])
    assert again.exit_code != 0 and "--overwrite" in again.output
    missing = runner.invoke(main, ["export", "no-such-model", "-o", str(tmp_path / "x.onnx")])
    # an unknown model is a usage error (2), as in rave enhance, serve and models
    assert missing.exit_code == 2 and "no-such-model" in missing.output
    assert not (tmp_path / "x.onnx").exists()


def test_cli_refuses_an_empty_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(main, ["export", "default", "-o", "", *extra])
        assert "-o" in one_error_line(result, 2) and "must not be empty" in result.output
    assert list(tmp_path.iterdir()) == []


def test_cli_model_that_is_not_a_checkpoint_is_a_usage_error(tmp_path: Path) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0" + bytes(64))
    result = CliRunner().invoke(main, ["export", str(photo), "-o", str(tmp_path / "m.onnx")])
    assert "photo.jpg" in one_error_line(result, 2)


def test_cli_output_whose_parent_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "small.jpg").write_bytes(b"not a folder")
    target = tmp_path / "small.jpg" / "m.onnx"
    result = CliRunner().invoke(main, ["export", "default", "-o", str(target)])
    line = one_error_line(result, 2)
    assert line.endswith(f"{target}: parent {tmp_path / 'small.jpg'} is a file, not a folder")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_cli_output_folder_that_takes_no_file_is_refused_before_exporting(monkeypatch) -> None:
    import rave.export

    def never(*args, **kwargs):
        raise AssertionError("the model was exported before the output was checked")

    monkeypatch.setattr(rave.export, "export_onnx", never)
    result = CliRunner().invoke(main, ["export", "default", "-o", "/proc/rave-test.onnx"])
    line = one_error_line(result, 2)
    assert "/proc/rave-test.onnx: cannot write in /proc" in line and ".part" not in line


def test_cli_failed_write_names_the_output_not_the_temporary(tmp_path: Path, short_disk) -> None:
    short_disk[0] = 200_000  # the up-front probe (64 kB) fits, the 1.2 MB model does not
    target = tmp_path / "m.onnx"
    result = CliRunner().invoke(main, ["export", "default", "-o", str(target)])
    line = one_error_line(result, 1)
    assert line == f"Error: cannot write {target} (no space left on device)"
    assert list(tmp_path.iterdir()) == []  # nor a temporary file
