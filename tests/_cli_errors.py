"""The one check of a command's failure that the command-line tests share."""

from __future__ import annotations

from click.testing import Result


def one_error_line(result: Result, status: int) -> str:
    """The single ``Error:`` line of a failed command, after checking its exit status and
    that no traceback reached the user."""
    assert result.exit_code == status, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]
