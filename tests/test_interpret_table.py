"""`rave interpret`'s table keeps its columns with wide (CJK) tokens.

Padding with ``str.ljust`` counts characters, but a terminal gives a CJK character two
columns, so rows holding one were pushed right of the others.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from _tiny_clip import register_tiny_clip
from rave.cli import main
from rave.encoders import create_encoder
from rave.guidance import interpret
from rave.guidance.residual import compute_residual, save_residual
from rave.io.printable import display_width, ljust_display


def test_display_width_counts_terminal_columns() -> None:
    assert display_width("star") == 4
    assert display_width("中文") == 4  # two wide characters
    assert display_width("ｶ") == 1  # half-width katakana
    assert display_width("Ａ") == 2  # full-width Latin
    assert display_width("e\u0301") == 1  # e + combining acute accent
    assert ljust_display("中", 5) == "中   " and display_width(ljust_display("中", 5)) == 5
    assert ljust_display("toolong", 3) == "toolong"


def test_interpret_table_columns_line_up_with_wide_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = register_tiny_clip(tmp_path / "clip")
    for folder, colour in (("backlit", (20, 10, 5)), ("well", (200, 180, 90))):
        (tmp_path / folder).mkdir()
        Image.new("RGB", (9, 7), colour).save(tmp_path / folder / "0.png")
    rv = compute_residual(
        tmp_path / "backlit", tmp_path / "well", create_encoder(name), progress=False
    )
    save_residual(rv, tmp_path / "r.pt")
    from open_clip.tokenizer import bytes_to_unicode

    stand_in = bytes_to_unicode()  # how CLIP's BPE vocabulary spells bytes

    def token(text: str) -> str:
        return "".join(stand_in[b] for b in text.encode()) + "</w>"

    ranking = interpret.TokenRanking(
        most=[(token("中文"), 0.5), (token("star"), 0.4), (token("ｶ"), 0.3)],
        least=[(token("ab"), -0.5), (token("東京都"), -0.4), (token("x"), -0.3)],
    )
    monkeypatch.setattr(interpret, "rank_tokens", lambda *args, **kwargs: ranking)
    args = ["interpret", str(tmp_path / "r.pt"), "--vocab", "token-ids", "--vocab-limit", "40"]
    result = CliRunner().invoke(main, [*args, "--top", "3"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.lstrip()[:1].isdigit()]
    assert len(rows) == 3 and "中文" in rows[0] and "東京都" in rows[1]
    # The second column of numbers starts at the same terminal column on every row.
    starts = {display_width(row[: row.index("-0.")]) for row in rows}
    assert len(starts) == 1, result.output
    firsts = {display_width(row[: row.index(" 0.")]) for row in rows}
    assert len(firsts) == 1, result.output
