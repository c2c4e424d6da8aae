"""Lines printed while another thread captures fd 2 must reach the terminal, not the capture."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from rave.io.library_messages import TerminalStream, captured_messages


def test_a_line_written_during_a_capture_waits_and_is_not_swallowed(tmp_path: Path) -> None:
    captured: list[str] = []
    inside = threading.Event()

    def decoder() -> None:
        with captured_messages() as messages:
            inside.set()
            time.sleep(0.3)  # the main thread writes meanwhile
        captured.extend(messages)

    with open(tmp_path / "terminal", "w+b") as terminal:
        saved = os.dup(2)
        os.dup2(terminal.fileno(), 2)  # stands for the user's terminal
        try:
            stream = TerminalStream(open(2, "w", closefd=False))  # noqa: SIM115
            worker = threading.Thread(target=decoder)
            worker.start()
            inside.wait(5)
            stream.write("error: a.jpg: broken\n")  # while fd 2 is redirected by the decoder
            worker.join()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        terminal.seek(0)
        shown = terminal.read().decode()
    assert "error: a.jpg: broken" in shown
    assert captured == []  # not taken for a decoder message of the other photo
