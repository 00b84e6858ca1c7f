"""`optiondesk gui --home DIR ...` reaches the window's own parser (it used to stop at the top level)."""

from __future__ import annotations

import pytest

from engine.cli import main


def test_gui_subcommand_when_given_window_options_then_the_window_parser_reads_them(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gui", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: optiondesk gui") and "--home DIR" in out and "--theme" in out


def test_gui_subcommand_when_given_an_unknown_option_then_the_window_parser_names_it(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["gui", "--no-such-option"])
    assert exc.value.code == 2
    assert "--no-such-option" in capsys.readouterr().err
