"""Lines printed while another thread captures fd 2 must reach the terminal, not the capture."""

from __future__ import annotations

import io
import threading
import time

from rave.io.library_messages import TerminalStream, captured_messages


def test_a_line_written_during_a_capture_waits_and_is_not_swallowed() -> None:
    terminal = io.StringIO()
    stream = TerminalStream(terminal)
    captured: list[str] = []
    inside = threading.Event()

    def decoder() -> None:
        with captured_messages() as messages:
            inside.set()
            time.sleep(0.2)  # the other thread writes meanwhile
        captured.extend(messages)

    worker = threading.Thread(target=decoder)
    worker.start()
    inside.wait(5)
    stream.write("error: a.jpg: broken\n")  # while fd 2 is captured (unless the host stalled)
    worker.join()
    assert terminal.getvalue() == "error: a.jpg: broken\n"
    assert captured == []  # not taken for a decoder message of the other photo
