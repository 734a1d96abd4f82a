"""Every option's --help says its default once: argparse's "(default: ...)" is not added to a help text that
says it in words (a default of None: "not given")."""

import argparse
import re

import pytest

from scratchnst.cli import ArgumentParser, build_parser


def _parsers(parser, prog="scratchnst"):
    """(prog, parser) for the command and every subcommand, at every level."""
    yield prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def _option_entries(help_text):
    """The help of each option: from a line that starts with '  -' to the next such line or section."""
    entries, current = [], None
    for line in help_text.splitlines():
        if re.match(r"^  \S", line) or not line.startswith(" "):
            current = [line] if line.startswith("  ") else None
            if current is not None:
                entries.append(current)
        elif current is not None:
            current.append(line)
    return [" ".join(" ".join(entry).split()) for entry in entries]


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("prog", list(PARSERS))
def test_no_option_says_its_default_twice(prog, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    entries = _option_entries(PARSERS[prog].format_help())
    assert entries, prog
    for entry in entries:
        assert entry.count("(default:") <= 1, entry
        assert "(default: None)" not in entry, entry


def test_the_parser_the_lessons_build_says_a_default_once():
    """A lesson's --weights: default None, its default said in the help (lessons/_lesson.py)."""
    parser = ArgumentParser(description="a lesson")
    parser.add_argument("--weights", default=None, help="weights file (default: found as `scratchnst stylize` does)")
    parser.add_argument("--size", type=int, default=128, help="long side")
    entries = _option_entries(parser.format_help())
    weights = next(e for e in entries if e.startswith("--weights"))
    assert weights.count("(default:") == 1 and "(default: None)" not in weights
    assert "(default: 128)" in next(e for e in entries if e.startswith("--size"))
