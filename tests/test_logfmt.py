"""Log lines stay one line each and encodable, whatever a stranger's string holds (hypercore.logfmt)."""

from __future__ import annotations

import logging

from hypercore.logfmt import LogfmtFormatter


def line(**fields: object) -> str:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "placed", (), None)
    record.__dict__.update(fields)
    return LogfmtFormatter().format(record)


def test_a_strangers_string_cannot_forge_a_line_move_the_terminal_or_break_the_encoding() -> None:
    forged = line(policy='x\rtime=2026 level=error msg="forged"\nlevel=error', image="\x1b[2Jgone", rid="a\ud800b")
    assert "\n" not in forged and "\r" not in forged and "\x1b" not in forged
    forged.encode("utf-8")  # a lone surrogate (a JSON "\ud800" escape) no longer raises here
    assert 'policy="x\\rtime=2026 level=error msg=\\"forged\\"\\nlevel=error"' in forged
    assert 'image="\\x1b[2Jgone"' in forged and 'rid="a\\ud800b"' in forged


def test_ordinary_values_are_written_as_they_are() -> None:
    assert line(node="n1", region="日本", price=0.5).endswith("node=n1 region=日本 price=0.5")
    assert 'detail="two words" path="C:\\\\x"' in line(detail="two words", path="C:\\x")
