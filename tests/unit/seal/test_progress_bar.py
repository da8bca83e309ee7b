"""The progress bar `citadel seal` draws (citadel.cli.progress): only on a terminal, and it cleans up."""

from __future__ import annotations

import io

import pytest

from citadel.cli.progress import ProgressBar, human_bytes


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_nothing_is_drawn_when_stderr_is_not_a_terminal() -> None:
    stream = io.StringIO()
    with ProgressBar(100, "sealing", stream=stream, delay=0) as bar:
        bar.advance(50)
    assert stream.getvalue() == ""


def test_quick_work_stays_silent_on_a_terminal() -> None:
    stream = Terminal()
    with ProgressBar(100, "sealing", stream=stream, delay=60) as bar:
        bar.advance(100)
    assert stream.getvalue() == ""


def test_bar_is_drawn_and_erased(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")
    stream = Terminal()
    with ProgressBar(4 << 20, "sealing", stream=stream, delay=0) as bar:
        bar("app.py", 1 << 20)
        drawn = stream.getvalue()
        assert "sealing  25% [" in drawn and "1.0 MiB/4.0 MiB" in drawn and "eta" in drawn
    assert stream.getvalue().endswith("\r\x1b[K"), "the bar erases its line when done"


def test_dumb_terminals_get_no_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    stream = Terminal()
    with ProgressBar(10, "sealing", stream=stream, delay=0) as bar:
        bar.advance(5)
    assert stream.getvalue() == ""


def test_line_handles_empty_and_overfull_work() -> None:
    assert "100%" in ProgressBar(0, "x", enabled=False).line()
    bar = ProgressBar(10, "x", enabled=False)
    bar.advance(20)
    assert "100%" in bar.line() and "[" + "#" * 10 in bar.line()


@pytest.mark.parametrize(
    "n, text",
    [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"), (200 << 20, "200.0 MiB"), (3 << 40, "3.0 TiB")],
)
def test_human_bytes(n: int, text: str) -> None:
    assert human_bytes(n) == text
