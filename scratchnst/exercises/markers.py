"""The solution markers in the package's source, and the student copy made from them.

`find_regions` reads the `# BEGIN SOLUTION` / `# HINT:` / `# END SOLUTION` comments of one file;
`hidden_functions` decides what else the copy hides; `make_student_copy` writes DEST/scratchnst
with every region and hidden body replaced by a NotImplementedError stub, and DEST/README.md.
Why the copy hides what it hides: the docstring of `scratchnst.exercises`.
"""

import ast
import errno
import io
import os
import re
import shutil
import tempfile
import textwrap
import tokenize
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from scratchnst import __version__
from scratchnst.atomic import reason
from scratchnst.errors import UsageError, UserError
from scratchnst.exercises.catalogue import CATALOGUE
from scratchnst.exercises.worker import IMPORTABLE, OUTPUT_MB, SHOWN_LINE_CHARS, SHOWN_LINES

# (what the copy's README says about checking it: self-check with the values shipped in the copy)

BEGIN = "# BEGIN SOLUTION"
END = "# END SOLUTION"
HINT = "# HINT:"

# The grader's own checks (exercises/checks_*.py) name a classic mistake by computing it, with code
# that computes the answer once the mistake is switched off (exercises.checks_optim._adam with its
# defaults is adam_update). In the student copy every function of theirs is hidden too.
GRADER_CHECKS = "exercises.checks_"


# ================================================================= markers in the source
class MarkerError(ValueError):
    """A solution marker that is malformed, unbalanced or outside a function (file:line in the message)."""


@dataclass(frozen=True)
class Region:
    """One marked solution region: lines begin..end (1-based, the marker lines included)."""

    module: str  # dotted module name inside the package, e.g. "layers"
    function: str  # the top-level function holding the region: the exercise
    begin: int
    end: int
    indent: str  # the markers' indentation: the stub goes there
    hint: str  # the HINT lines, joined


_MARKER_LIKE = re.compile(r"\b(BEGIN|END)\s*SOLUTION|^#\s*HINT\b", re.IGNORECASE)
# Tokenizing is slow in pure Python: files that cannot hold a marker are not tokenized at all.
_MAY_HOLD_MARKERS = re.compile(r"SOLUTION|#\s*HINT", re.IGNORECASE)


def find_regions(source, module, filename=None, tree=None):
    """The solution regions of one module's source, in order.

    Args:
        source: the module's text.
        module: its dotted name inside the package ("layers"), recorded in each Region.
        filename: shown in error messages (default module + ".py").
        tree: ast.parse(source), if the caller has it already.

    Returns:
        list of Region.

    Markers are comments alone on their line, found with tokenize (so docstrings and strings may
    quote them freely): BEGIN, any number of HINT lines right after it, the answer, then END at
    BEGIN's indentation, all inside one top-level function. Anything else that looks like a
    marker raises MarkerError: a misspelt marker must not silently leave an answer in the copy.
    """
    if not _MAY_HOLD_MARKERS.search(source):
        return []
    filename = filename or f"{module}.py"
    lines = source.splitlines()
    body = (tree or ast.parse(source)).body
    # a function owns its lines up to the next top-level statement: END may follow its last statement
    spans = [(node.lineno, nxt.lineno - 1 if nxt else len(lines), node.name)
             for node, nxt in zip(body, body[1:] + [None])
             if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    regions, opened, hints = [], None, []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row, col = token.start
        text = token.string.strip()
        where = f"{filename}:{row}"
        alone = not lines[row - 1][:col].strip()
        if alone and text == BEGIN:
            if opened:
                raise MarkerError(f"{where}: {BEGIN!r} inside the region opened at line {opened[0]}")
            opened, hints = (row, lines[row - 1][:col]), []
        elif alone and text == END:
            if not opened:
                raise MarkerError(f"{where}: {END!r} without {BEGIN!r}")
            begin, indent = opened
            if lines[row - 1][:col] != indent:
                raise MarkerError(f"{where}: {END!r} is not indented as its {BEGIN!r} (line {begin})")
            owner = [name for first, last, name in spans if first < begin and row <= last]
            if not owner or not indent:
                raise MarkerError(f"{where}: the region from line {begin} is not inside one top-level function")
            regions.append(Region(module, owner[0], begin, row, indent, " ".join(hints)))
            opened = None
        elif alone and text.startswith(HINT) and opened and row == opened[0] + 1 + len(hints):
            hints.append(text[len(HINT):].strip())
        elif _MARKER_LIKE.search(text):
            raise MarkerError(f"{where}: {text!r} is not a valid marker here: write {BEGIN!r}, then "
                              f"{HINT!r} lines, then the answer, then {END!r}, each alone on its line")
    if opened:
        raise MarkerError(f"{filename}:{opened[0]}: {BEGIN!r} without {END!r}")
    return regions


# ==================================================================== the student copy
@dataclass
class _Source:
    """One .py file of the package, parsed."""

    path: Path  # relative to the package folder
    module: str
    text: str
    tree: ast.Module
    regions: list


def _package_files(package_dir):
    """(path relative to the package, dotted module name, text) of every .py file, caches skipped."""
    for path in sorted(Path(package_dir).rglob("*.py")):
        rel = path.relative_to(package_dir)
        if "__pycache__" not in rel.parts:
            yield rel, ".".join(rel.with_suffix("").parts), path.read_text(encoding="utf-8")


def package_regions(package_dir):
    """Every solution region of the package in package_dir (MarkerError if a marker is malformed)."""
    return [r for rel, module, text in _package_files(package_dir) for r in find_regions(text, module, str(rel))]


def _read_package(package_dir):
    """Every .py file of the package folder, parsed, with its regions."""
    sources = []
    for rel, module, text in _package_files(package_dir):
        tree = ast.parse(text)
        sources.append(_Source(rel, module, text, tree, find_regions(text, module, str(rel), tree)))
    return sources


def _top_functions(tree):
    return {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _name_uses(tree):
    """(name, line) of every use of an identifier: bare names, attributes (x.name), `from m import name`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            yield node.id, node.lineno
        elif isinstance(node, ast.Attribute):
            yield node.attr, node.end_lineno  # the attribute's own line, in a multi-line expression
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                yield alias.name, node.lineno


def hidden_functions(sources):
    """The functions the student copy hides besides the regions (the docstring of scratchnst.exercises).

    Args:
        sources: the package's parsed files (`_read_package`).

    Returns:
        dict (module, function) -> the message of the stub that replaces its body.
    """
    exercises = {(s.module, r.function) for s in sources for r in s.regions}
    defs = {s.module: _top_functions(s.tree) for s in sources}
    hidden = {}
    for module, function in sorted(exercises):
        twin = f"{function}_naive"
        if twin in defs[module] and (module, twin) not in exercises:
            hidden[(module, twin)] = (f"hidden in the student copy: {twin} is the loop version of {function}, "
                                      f"that is, an answer; write {function} itself (loops are fine there)")
    if exercises:  # a package without regions is an answer key or a student copy: nothing to hide
        for s in sources:
            if s.module.startswith(GRADER_CHECKS):
                for name in defs[s.module]:
                    hidden[(s.module, name)] = ("hidden in the student copy: the grader's checks compute the "
                                                "answers (to recognise the mistakes); write the exercise itself")
    uses = defaultdict(list)
    for s in sources:
        for name, line in _name_uses(s.tree):
            uses[name].append((s.module, line))
    regions = {s.module: [(r.begin, r.end) for r in s.regions] for s in sources}

    def in_answers(module, line):
        spans = regions[module] + [(defs[m][f].lineno, defs[m][f].end_lineno) for m, f in hidden if m == module]
        return any(first <= line <= last for first, last in spans)

    candidates = [(s.module, name) for s in sources if s.regions for name in defs[s.module]
                  if name.startswith("_") and not name.startswith("__") and (s.module, name) not in exercises]
    changed = True
    while changed:  # hiding one helper can leave another used only by hidden code: repeat until stable
        changed = False
        for module, name in candidates:
            if (module, name) in hidden:
                continue
            node = defs[module][name]
            refs = [(m, line) for m, line in uses[name]
                    if not (m == module and node.lineno <= line <= node.end_lineno)]  # its own body
            if refs and all(in_answers(m, line) for m, line in refs):
                hidden[(module, name)] = (f"hidden in the student copy: {name} is a helper of the reference "
                                          "answers; write your own code in the exercise (or write this helper first)")
                changed = True
    return hidden


# Modules whose functions compute exercises' answers by a faster road to the same results, run by
# the networks: `fast_pool`'s max_pool_forward is the pooling exercise's answer, banded. In the
# student copy such a module keeps its public functions (names, signatures, docstrings) but each
# calls the function of the same name in `layers`, the student's: the copy holds no second answer
# to read, and the student's networks run the student's own pooling.
FAST_TWINS = ("fast_pool",)


def _twin_text(source):
    """The student's version of a FAST_TWINS module: each public function delegates to `layers`."""
    tree = source.tree
    doc = ast.get_docstring(tree) or ""
    title = doc.splitlines()[0] if doc else f"scratchnst.{source.module}"
    note = (f"In this student copy every function here runs the one of the same name in `layers`: yours.\n"
            f"(The package's own {source.module} computes the same results a faster way; it would be an answer.)")
    parts = [f'"""{title}\n\n{note}\n"""\n', "\nfrom scratchnst import layers\n"]
    for name, node in _top_functions(tree).items():
        if name.startswith("_"):
            continue
        if node.args.vararg or node.args.kwarg or node.args.kwonlyargs or node.args.posonlyargs:
            raise ValueError(f"{source.module}.{name}: a twin takes plain positional arguments only")
        arguments = ", ".join(a.arg for a in node.args.args)
        function_doc = ast.get_docstring(node, clean=False)
        docstring = f'    """{function_doc}"""\n' if function_doc else ""
        parts.append(f"\n\ndef {name}({ast.unparse(node.args)}):\n{docstring}"
                     f"    return layers.{name}({arguments})\n")
    text = "".join(parts)
    compile(text, str(source.path), "exec")
    return text


def _literal(text):
    """A double-quoted Python string literal of text."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stub(indent, message):
    """Source lines of `raise NotImplementedError(message)` at `indent`, wrapped under 100 columns."""
    one_line = f"{indent}raise NotImplementedError({_literal(message)})\n"
    if len(one_line) <= 100:
        return [one_line]
    pieces = textwrap.wrap(message, 100 - len(indent) - 8, break_long_words=False, break_on_hyphens=False)
    body = [f"{indent}    {_literal(p + (' ' if i < len(pieces) - 1 else ''))}\n" for i, p in enumerate(pieces)]
    return [f"{indent}raise NotImplementedError(\n", *body, f"{indent})\n"]


def _student_text(source, hidden):
    """The student's version of one file: regions and hidden bodies replaced by stubs."""
    lines = source.text.splitlines(keepends=True)
    edits = []  # (first line, last line, replacement), 1-based inclusive
    for r in source.regions:
        hint = r.hint or f"write this part of {r.function}: its docstring says what to compute"
        edits.append((r.begin, r.end, _stub(r.indent, hint)))
    for name, node in _top_functions(source.tree).items():
        if (source.module, name) not in hidden:
            continue
        first = node.body[0]
        has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str)
        indent = re.match(r"[ \t]*", lines[first.lineno - 1]).group()
        # keep the docstring (what to compute), drop everything after it
        start = first.end_lineno + 1 if has_docstring else first.lineno
        edits.append((start, node.end_lineno, _stub(indent, hidden[(source.module, name)])))
    for first, last, replacement in sorted(edits, reverse=True):
        lines[first - 1:last] = replacement
    text = "".join(lines)
    compile(text, str(source.path), "exec")  # a stub that breaks the syntax is our bug: fail here, loudly
    return text


# ==================================================================== writing the copy
def installed_package_dir():
    """The folder of the scratchnst package this process imported: the reference answers."""
    import scratchnst

    return Path(scratchnst.__file__).resolve().parent


def _check_destination(dest, package_dir, force):
    """Raise unless DEST may receive a student copy.

    Raises:
        UserError: DEST is a file, or cannot be looked at (a link loop, no permission).
        UsageError: DEST is or holds the installed package, or is not empty and force is False
            (the command line must change: another folder, or --force).
    """
    try:
        dest.stat()
    except OSError as error:
        if error.errno not in (errno.ENOENT, errno.ENOTDIR):  # missing: it is made; ENOTDIR: mkdir says so
            raise UserError(f"cannot use {dest} ({reason(error)}): give a folder for the student copy") from None
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} is a file: give a folder for the student copy")
    resolved = dest.resolve()
    if package_dir in (resolved, (resolved / "scratchnst").resolve()) or package_dir in resolved.parents:
        raise UsageError(f"{dest} would overwrite the installed scratchnst package ({package_dir}); "
                         "choose another folder")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise UsageError(f"{dest} is not empty: choose a new or empty folder, or add --force to replace "
                         f"{dest / 'scratchnst'} and {dest / 'README.md'}")


def make_student_copy(dest, force=False, solutions=False, extra=None):
    """Write DEST/scratchnst (the package with the answers cut out) and DEST/README.md.

    Args:
        dest: folder to write into; created if missing.
        force: write even if DEST is not empty (DEST/scratchnst and DEST/README.md are replaced,
            nothing else in DEST is touched).
        solutions: copy the package unchanged (an answer key laid out like the student copy).
        extra: None, or a function called with the new copy's package folder before it is moved
            into place, to add files to it (the self-check values: grading.make_student_copy).

    Returns:
        list of Region, the exercises the copy holds.

    Raises UserError for a destination that cannot be written, UsageError for one that must not
    be (see _check_destination), or when run from a student copy. The installed package
    is only read. Everything is written into a temporary folder inside DEST first, then renamed
    into place, so an interrupted run leaves no half-written copy.
    """
    package_dir = installed_package_dir()
    if os.fspath(dest) == "":  # Path("") is ".": the current folder, which the user did not name
        raise UsageError("DIR '': give a folder for the student copy, e.g. scratchnst exercises make my-exercises")
    dest = Path(dest)
    _check_destination(dest, package_dir, force)
    sources = _read_package(package_dir)
    regions = [r for s in sources for r in s.regions]
    if not regions:
        raise UsageError(f"{package_dir} has no solution regions: it is a student copy itself; "
                         "run the scratchnst you installed")
    hidden = {} if solutions else hidden_functions(sources)
    hidden_in = {module for module, _ in hidden}
    texts = {} if solutions else {s.path: _student_text(s, hidden) for s in sources
                                  if s.regions or s.module in hidden_in}
    if not solutions:
        texts.update({s.path: _twin_text(s) for s in sources if s.module in FAST_TWINS})
    created = [folder for folder in (dest, *dest.parents) if not folder.exists()]  # innermost first
    try:
        try:
            dest.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".scratchnst-exercises-", dir=dest))
        except OSError as error:
            raise UserError(f"cannot create a folder in {dest}: {_failure(error)}") from error
        try:
            shutil.copytree(package_dir, tmp / "scratchnst", ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
            for rel, text in texts.items():
                (tmp / "scratchnst" / rel).write_text(text, encoding="utf-8")
            if extra is not None:
                extra(tmp / "scratchnst")
            (tmp / "README.md").write_text(_readme(regions, hidden, solutions), encoding="utf-8")
            try:
                for name in ("scratchnst", "README.md"):
                    if os.path.lexists(dest / name):  # only with --force: move the old one aside, deleted below
                        os.replace(dest / name, tmp / f"replaced-{name}")
                    os.replace(tmp / name, dest / name)
            except BaseException:
                # A failure or Ctrl-C between the two renames of a name: put the old copy back, so
                # that --force never leaves the folder with neither the old copy nor the new one.
                for name in ("scratchnst", "README.md"):
                    if os.path.lexists(tmp / f"replaced-{name}") and not os.path.lexists(dest / name):
                        os.replace(tmp / f"replaced-{name}", dest / name)
                raise
        except OSError as error:
            raise UserError(f"cannot write the student copy into {dest}: {_failure(error)}") from error
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for folder in created:  # a failed copy leaves none of the folders it made
            if not folder.is_dir() or any(folder.iterdir()):
                break
            folder.rmdir()
    return regions


def _failure(error):
    """ "<the system's reason>; <what to do>" for a failed write, one line whatever the error.

    shutil.copytree collects every file it could not copy into one shutil.Error whose text lists
    them all (with the temporary folder's names): only the first one's reason is shown.
    """
    if isinstance(error, shutil.Error) and error.args and isinstance(error.args[0], list) and error.args[0]:
        first = error.args[0][0]
        why = str(first[-1]) if isinstance(first, tuple) else str(first)  # (src, dst, str(OSError))
        number = re.search(r"\[Errno (\d+)\]", why)
        code = int(number.group(1)) if number else None
        text = os.strerror(code) if code else " ".join(why.split())[:120]
    else:
        code, text = error.errno, reason(error)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"{text}; free some space or choose another folder"
    return f"{text}; choose a writable folder"


def _readme(regions, hidden, solutions):
    """DEST/README.md: what the student does, and how to check it."""
    points = {(e.module, e.function): e.points for e in CATALOGUE}
    functions = list(dict.fromkeys((r.module, r.function) for r in regions))
    order = {(e.module, e.function): i for i, e in enumerate(CATALOGUE)}
    functions.sort(key=lambda mf: order.get(mf, len(order)))
    rows = "\n".join(f"| `{f}` | scratchnst/{m.replace('.', '/')}.py | {points.get((m, f), 'not graded')} |"
                     for m, f in functions)
    if solutions:
        intro = (f"`scratchnst/` here is the scratchnst package {__version__} with its answers: the answer key\n"
                 "of the exercises below, laid out like the student copy (`scratchnst exercises make DIR`).\n"
                 "The answers sit between the `BEGIN SOLUTION` and `END SOLUTION` comments.")
    else:
        intro = (f"`scratchnst/` here is a copy of the scratchnst package {__version__} in which the bodies of\n"
                 f"{len(functions)} functions are left for you to write. Each now raises `NotImplementedError`\n"
                 "with a hint: replace that `raise` with your code. The function's docstring gives the shapes\n"
                 "and the formula; the code around the `raise` (padding, shapes, the return line) is there.")
    hidden_note = ""
    if hidden:
        hidden_note = ("- The loop versions (`*_naive`) and the private helpers of the reference answers are\n"
                       "  hidden as well: they raise `NotImplementedError` too. You need not write them.\n")
    # what may be imported and printed: the worker's own definitions, which the checker and grading enforce
    libraries = [f"`{name}`" for name in IMPORTABLE if name != "scratchnst"]
    importable = "Python's standard library, " + ", ".join(libraries) + " and this package"
    shown, cut, output_mb = SHOWN_LINES, SHOWN_LINE_CHARS, OUTPUT_MB
    return f"""# scratchnst exercises

{intro}

| exercise (in a good order) | file | points |
|---|---|---|
{rows}

## Check your work

From this folder (or name the folder: `scratchnst exercises check DIR`):

    python -m scratchnst exercises check                 # every exercise, then a score
    python -m scratchnst exercises check --only relu     # only the exercises whose name contains "relu"

`python -m scratchnst` here runs this copy, which carries the reference values of its checks in
`scratchnst/exercises/selfcheck/` (plain JSON and NumPy arrays): no answer key is needed. Where the
full scratchnst is installed, its `scratchnst exercises check` compares with its answers instead
(and with PyTorch, where installed). Your teacher grades with other inputs of the same kinds.

Your functions are compared with the reference solution on seeded inputs in float64, with
finite differences and the float32 run path. For each exercise the checker
says which checks pass, shows where a failing one differs (expected against given, the largest
relative error), names the mistake when it recognises a classic one, and gives a hint. The exit
status is 0 at 100%.

`print()` works for debugging: under each exercise the checker shows the first lines your code
printed ({shown} lines per exercise at most, {cut} characters per line), and how many it printed in all.
The checks of one exercise may print {output_mb} MB together: the call that goes over stops there and
fails its check, and so do the exercise's later checks ("printed more than {output_mb} MB: remove the
print() calls"), here and when your teacher grades; other exercises are not affected.

## Rules

- Imports: {importable} only. Anything else (torch, scipy,
  matplotlib, PIL, h5py, ...) cannot be imported while your code is graded, and the checker
  refuses it too, with the same message: what passes here passes there.
- Never write into an input (x, dout, a cache, m, v): compute into new arrays.
- Keep the dtype you are given (float32 in, float32 out); sum costs in float64.
{hidden_note}- An exercise whose main check fails earns none of its points, whatever its other checks say.
"""
