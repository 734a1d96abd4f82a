"""Helpers of the exercise and grader tests: planting an answer into a copy, and reading a report."""

import ast
import io
import textwrap
from pathlib import Path

from scratchnst import exercises
from scratchnst.exercises.markers import find_regions


def plant(root, module, function, code):
    """Put `code` where the student writes module.function: its solution region (an answer key) or its
    NotImplementedError stub (a student copy)."""
    path = Path(root) / "scratchnst" / f"{module}.py"
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    regions = [r for r in find_regions(text, module) if r.function == function]
    if regions:
        (region,) = regions
        first, last, indent = region.begin, region.end, region.indent
    else:
        node = next(n for n in ast.parse(text).body if isinstance(n, ast.FunctionDef) and n.name == function)
        (stub,) = [s for s in node.body if isinstance(s, ast.Raise) and "NotImplementedError" in ast.unparse(s)]
        first, last, indent = stub.lineno, stub.end_lineno, " " * stub.col_offset
    lines[first - 1:last] = [textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", indent)]
    path.write_text("".join(lines), encoding="utf-8")


def by_name(report):
    return {r.exercise.function: r for r in report.results}


def rendered(report):
    """The report as the command prints it."""
    out = io.StringIO()
    exercises.print_report(report, out)
    return out.getvalue()
