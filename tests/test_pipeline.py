"""The batch pipeline: photos overlap, the network is used once at a time in input order,
results and lines come in input order, large photos run alone."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rave.inference.pipeline import (
    OVERLAP_MAX_BYTES,
    end_turn,
    in_order,
    overlapped,
    photo_bytes,
    wait_for_turn,
)

SMALL, LARGE = 1000, OVERLAP_MAX_BYTES + 1


class _Recorder:
    """Jobs that read, take the network's turn, and write, recording what overlaps."""

    def __init__(self, read_seconds: dict[int, float] | None = None) -> None:
        self.lock = threading.Lock()
        self.running: set[int] = set()
        self.in_turn: set[int] = set()
        self.turn_order: list[int] = []
        self.overlapping_turns = 0
        self.concurrent: dict[int, set[int]] = {}  # job -> jobs running at some point with it
        self.most_running = 0
        self.read_seconds = read_seconds or {}
        self.lines: list[str] = []

    def run(self, job: int) -> None:
        with self.lock:
            self.running.add(job)
            self.most_running = max(self.most_running, len(self.running))
            for other in self.running:
                self.concurrent.setdefault(other, set()).update(self.running - {other})
        try:
            time.sleep(self.read_seconds.get(job, 0.0))  # "decoding"
            if job == 3:
                raise ValueError("photo 3 is broken")
            wait_for_turn()
            with self.lock:
                self.overlapping_turns += bool(self.in_turn)
                self.in_turn.add(job)
                self.turn_order.append(job)
            time.sleep(0.02)
            with self.lock:
                self.in_turn.discard(job)
            end_turn()
            in_order(lambda: self.lines.append(f"note {job}"))
        finally:
            with self.lock:
                self.running.discard(job)


def test_results_turns_and_lines_keep_the_input_order() -> None:
    # Later photos decode faster than earlier ones, so they would overtake them.
    recorder = _Recorder({0: 0.15, 1: 0.1, 2: 0.05})
    outcomes = []
    futures = overlapped(range(8), recorder.run, lambda _: SMALL)
    for job, future in zip(range(8), futures, strict=True):
        try:
            future.result()
            outcomes.append(job)
        except ValueError as err:
            outcomes.append(str(err))
        recorder.lines.append(f"reported {job}")
    assert outcomes == [0, 1, 2, "photo 3 is broken", 4, 5, 6, 7]
    assert recorder.turn_order == [0, 1, 2, 4, 5, 6, 7]  # the failed photo frees its turn
    assert recorder.overlapping_turns == 0
    expected = []
    for job in range(8):
        expected += ([] if job == 3 else [f"note {job}"]) + [f"reported {job}"]
    assert recorder.lines == expected
    assert recorder.most_running == 3  # one decoding, one enhancing, one encoding


def test_next_photo_is_decoded_while_the_current_one_is_enhanced() -> None:
    decoding_second = threading.Event()

    def run(job: int) -> None:
        if job == 1:
            decoding_second.set()
        wait_for_turn()
        if job == 0:
            # Without overlap photo 1 would start only after photo 0: this would time out.
            assert decoding_second.wait(timeout=10)
        end_turn()

    for future in overlapped(range(2), run, lambda _: SMALL):
        future.result()


@pytest.mark.parametrize("large", [0, 2, 4])
def test_large_photos_run_alone(large: int) -> None:
    recorder = _Recorder()
    sizes = {job: LARGE if job == large else SMALL for job in range(5)}
    for future in overlapped(range(5), recorder.run, sizes.get):
        future.exception()
    assert not recorder.concurrent.get(large)
    assert all(large not in others for others in recorder.concurrent.values())


def test_unknown_sizes_count_as_large() -> None:
    recorder = _Recorder()
    for future in overlapped(range(3), recorder.run, lambda _: None):
        future.exception()
    assert not any(recorder.concurrent.values())


def test_overlap_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAVE_OVERLAP", "0")
    recorder = _Recorder()
    for future in overlapped(range(3), recorder.run, lambda _: SMALL):
        future.exception()
    assert recorder.most_running == 1


def test_outside_a_pipeline_turns_are_no_ops_and_lines_print_at_once() -> None:
    lines: list[str] = []
    wait_for_turn()
    end_turn()
    in_order(lambda: lines.append("now"))
    assert lines == ["now"]


def test_photo_bytes_reads_the_header(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((30, 20, 3), np.uint8)).save(tmp_path / "rgb.jpg")
    Image.fromarray(np.zeros((30, 20), np.uint16)).save(tmp_path / "grey16.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert photo_bytes(tmp_path / "rgb.jpg") == 30 * 20 * 3
    assert photo_bytes(tmp_path / "grey16.png") == 30 * 20 * 2
    assert photo_bytes(tmp_path / "bad.jpg") is None
    assert photo_bytes(tmp_path / "missing.jpg") is None
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)  # no writer: opening it for reading would block
    sizes: list[int | None] = []
    worker = threading.Thread(target=lambda: sizes.append(photo_bytes(fifo)), daemon=True)
    worker.start()
    worker.join(10)
    if worker.is_alive():
        with open(fifo, "wb"):  # a writer that closes at once lets the blocked open return
            pass
        worker.join()
        pytest.fail("photo_bytes blocked on a FIFO")
    assert sizes == [None]


def test_an_early_stop_lets_no_photo_run_on() -> None:
    """Closing the results early (Ctrl-C, a bug, a full disk) stops photos that have not
    reached the network and joins every worker before close() returns: nothing is written
    after the caller has reported (a write after the command returned would land in
    whatever folder is current by then)."""
    turns_taken: list[int] = []
    finished: list[int] = []

    def run(job: int) -> None:
        if job == 0:
            time.sleep(0.2)  # photo 0 is still being read while 1 and 2 wait for their turns
        wait_for_turn()
        turns_taken.append(job)
        time.sleep(0.05)
        end_turn()
        finished.append(job)

    results = overlapped(range(6), run, lambda job: SMALL)
    first = next(results)  # photo 0's result
    assert first is not None
    results.close()  # the caller stops here
    snapshot = (list(turns_taken), list(finished))
    time.sleep(0.2)
    assert (turns_taken, finished) == snapshot  # nothing ran on after close()
    assert 0 in finished and not {3, 4, 5} & set(turns_taken)  # never submitted or stopped


def test_a_stopped_photo_gives_up_before_the_network() -> None:
    from rave.inference.pipeline import BatchStopped

    outcome: list[BaseException | None] = []

    def run(job: int) -> None:
        if job == 0:
            time.sleep(0.3)  # photo 1 waits for its turn meanwhile
        try:
            wait_for_turn()
        except BatchStopped as stop:
            outcome.append(stop)
            raise
        outcome.append(None)
        end_turn()

    results = overlapped(range(2), run, lambda job: SMALL)
    next(results)
    results.close()
    # photo 1 either already had its turn when the caller closed, or gave up: never both
    assert len(outcome) == 2 and outcome[0] is None
