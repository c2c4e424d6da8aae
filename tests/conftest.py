"""Shared fixtures: the reference material in ../shared, and an isolated model cache."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from rave.network import EnhancementNet, build_enhancer, extract_state_dict, load_checkpoint_file

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"

# Two cores are shared by the whole suite: more threads than that only thrash. Under
# pytest-xdist (`make test` runs one worker per core) each worker, and every process it
# starts, gets one thread: two workers of two spinning OpenMP threads each on two cores made
# one training test 5x slower, while one thread each ran the whole suite in 0.6x its serial
# time.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository root; tests that need it skip when it is absent."""
    if not (SHARED_DIR / "reference").is_dir():
        pytest.skip(f"reference material not found at {SHARED_DIR} (../shared beside the repo)")
    return SHARED_DIR


@pytest.fixture(scope="session")
def checkpoints_dir(shared_dir: Path) -> Path:
    """The authors' released checkpoints (``<name>.pth``, keys prefixed ``module.``)."""
    return shared_dir / "reference" / "checkpoints"


@pytest.fixture(scope="session")
def golden_dir(shared_dir: Path) -> Path:
    """Outputs of the reference implementation (``*.npz``)."""
    return shared_dir / "reference" / "golden"


@pytest.fixture(scope="session")
def photos_dir(shared_dir: Path) -> Path:
    """Real dim/backlit photos (``dicm/*.jpg``, ``lime/*.bmp``)."""
    return shared_dir / "data"


@pytest.fixture(scope="session")
def checkpoint(checkpoints_dir: Path) -> Path:
    """The authors' ``rave_unpaired`` checkpoint (tests of photo IO, the API and the CLI)."""
    path = checkpoints_dir / "rave_unpaired.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture(scope="session")
def net(checkpoint: Path) -> EnhancementNet:
    """``checkpoint`` loaded as an inference network (eval mode, reflect padding)."""
    return build_enhancer(extract_state_dict(load_checkpoint_file(checkpoint)))


@pytest.fixture
def short_disk(monkeypatch) -> Iterator[list[int]]:
    """``os.write`` on a disk with 20 kB left: a short write, then ENOSPC (like a full tmpfs).

    Yields a one-item list holding the bytes left, which a test may change.
    """
    real_write = os.write
    left = [20_000]

    def write(descriptor: int, data) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(descriptor, bytes(memoryview(data)[: left[0]]))
        left[0] -= written
        return written

    monkeypatch.setattr(os, "write", write)
    yield left


@pytest.fixture
def mount_tmpfs(tmp_path: Path) -> Iterator[Callable[[str, str], Path]]:
    """``mount(name, options)``: a tmpfs mounted on ``tmp_path / name`` (unmounted after the
    test), or skip where this process cannot mount one (needs root on Linux)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if sys.platform != "linux" or os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root on Linux")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", str(folder)], check=False)


@pytest.fixture(scope="module")
def light_half_net() -> EnhancementNet:
    """A network whose light map is 0.5 everywhere: the result is min(1, I * 2**S), so the
    server and page tests know every result without the real model."""
    net = EnhancementNet().eval()
    with torch.no_grad():
        net.cond_add1.weight.zero_()
        net.cond_add1.bias.fill_(0.5)
    return net


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's chromium (``RAVE_CHROMIUM`` or ``chromium`` on PATH) driven by Playwright.

    Playwright's own browser download cannot work offline, so the system Chromium is used
    by its path. Without one (or without playwright) the test skips with a message; in CI
    (``CI=true``) it fails instead, as ``.ci/run`` installs both.
    """
    import shutil

    names = (os.environ.get("RAVE_CHROMIUM"), "chromium", "chromium-browser")
    executable = next((path for name in names if name and (path := shutil.which(name))), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if executable is None or sync_playwright is None:
        reason = (
            "no Chromium found: apt-get install -y chromium (or set RAVE_CHROMIUM)"
            if executable is None
            else "the playwright package is not installed (pip install playwright)"
        )
        if _in_ci():
            pytest.fail(f"{reason} (CI must run the browser tests: see .ci/run)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        launched.close()


@pytest.fixture(autouse=True)
def isolated_model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> Path:
    """Point the model cache at an empty folder and forbid downloads in every test."""
    cache = tmp_path_factory.mktemp("rave_home")
    monkeypatch.setenv("RAVE_HOME", str(cache))
    monkeypatch.setenv("RAVE_OFFLINE", "1")
    return cache


# ------------------------------------------------------------------ the `shared` marker
# Every test that reads ../shared (through the fixtures above) carries the `shared` marker,
# so `pytest -m "not shared"` runs without it and the summary says how many were skipped.
# In CI (CI=true) ../shared is present: a run where all of them skipped is a failure, since
# the golden-output and real-photo tests would otherwise pass by not running.
_shared_outcomes: dict[str, list[str]] = {"passed": [], "failed": [], "skipped": []}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "shared_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.shared)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "shared" not in report.keywords:
        return
    if report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _shared_outcomes["skipped"].append(reason)
    elif report.when == "call":
        _shared_outcomes["passed" if report.passed else "failed"].append(report.nodeid)


def _shared_ran() -> int:
    return len(_shared_outcomes["passed"]) + len(_shared_outcomes["failed"])


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    skipped = _shared_outcomes["skipped"]
    if not skipped and not _shared_ran():
        return
    line = f"reference material ({SHARED_DIR}): {_shared_ran()} tests ran, {len(skipped)} skipped"
    if skipped:
        line += f" ({sorted(set(skipped))[0]})"
    terminalreporter.write_line(line)
    if _ci_without_shared():
        terminalreporter.write_line("CI=true but no test that needs ../shared ran: failing the run")


def _ci_without_shared() -> bool:
    return (
        os.environ.get("CI", "").lower() in ("1", "true")
        and bool(_shared_outcomes["skipped"])
        and not _shared_ran()
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _ci_without_shared() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
