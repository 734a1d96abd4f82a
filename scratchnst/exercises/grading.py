"""Grading one student copy: the checks, running them in the student's process, the score, the report.

The package's own source marks the bodies a student should write. A comment line
`# BEGIN SOLUTION`, then `# HINT: ...` lines, then the answer, then `# END SOLUTION` at the
same indentation, inside one top-level function: that function is one exercise (conv2d_forward,
relu_backward, compute_content_cost, gram_matrix, adam_update, ...).

`scratchnst exercises make DIR` writes DIR/scratchnst, an importable copy of the package in which
every marked region is replaced by `raise NotImplementedError("<the hint>")`, DIR/README.md, and
the reference values of the checks as plain data (casefile.py), so that the copy can check itself.
`scratchnst exercises check [DIR]` self-checks such a copy; `scratchnst exercises grade DIR...`
grades a class (batch.py).

What else the student copy hides, and why
    A marked region is not the only copy of its answer in the package:
    - the loop twin `f_naive` of an exercise `f` (layers.conv2d_forward_naive, ...) computes
      exactly what `f` must compute, so `return conv2d_forward_naive(x, w, b, stride, padding)`
      would pass the exercise in one line;
    - private helpers that only the answers use: the convolution helper called on the padded
      input is conv2d_forward;
    - the grader's own checks (exercises/checks_*.py), which are copied with the package: to name
      a classic mistake they compute it, by code that computes the answer once the mistake is
      switched off (checks_optim._adam with its defaults is adam_update). Every function of
      theirs is hidden; a copy checks itself with the shipped values instead;
    - the pooling the networks run (fast_pool, markers.FAST_TWINS), the same results as the
      pooling exercises a band of rows at a time: in the copy each of its functions calls the
      student's function of the same name in layers, so the student's networks pool with the
      student's code, as they did before fast_pool existed.
    The student copy keeps their signatures and docstrings (they say what to compute: a hint,
    not an answer) and replaces their bodies with a NotImplementedError stub, so that every name
    still imports. "Used only by the answers" is decided from the code, not from a list: a
    private function is hidden when every reference to its name anywhere in the package lies in
    a marked region or in another hidden function (markers.hidden_functions). The scaffolding the
    exercises are written against (conv_output_size, _pad_hw, _pool_geometry, unroll, ...) stays,
    because unmarked code uses it too.
    None of this is a security boundary: a student copy is the student's. The boundary is in
    grading (sandbox.py): there the submission runs where the answers cannot be seen at all.

How grading works
    The checks come first, as data: for each exercise a list of cases.Case (inputs, expected
    value, tolerance, the values of classic mistakes), computed from the installed answers
    (`reference_cases`: seeded; a teacher's `grade` salts the seed per run) or read from the
    values shipped with a student copy (`shipped_cases`). The submission's scratchnst/ is copied
    (its .py files only) into a scratch folder, and imported there in a child process
    (sandbox.StudentProcess, in bubblewrap when grading) that runs worker.py; requests and answers
    are frames of JSON and raw arrays, never pickle. The package's import has its own budget; the
    calls of one exercise share theirs (--timeout) and a submission's calls and imports (each new
    child's, after a crash too) a total (--budget). A
    call that outlives its budget, a crash or a broken frame gets the child killed (a fresh one
    serves the next exercise).

    Each check is one call compared with one witness: the reference solution (float64); centred
    finite differences of the reference forward pass (for the backward passes and cost
    gradients); PyTorch through torch_ref where it is installed (the layers); and a float32 call
    that must keep float32 (the run path), or, for a cost, must still be summed in float64. The
    backward passes and cost gradients also have a main case at scale (cases.at_scale), graded only,
    which numerical differences of the submission's own forward pass cannot answer in time.
    Backward passes receive caches made by the reference forward pass, so a broken forward pass
    costs the points of its own exercise only. A failing check shows the worst element and names
    the mistake when the answer is what a classic mistake computes (cases.judge): each exercise
    lists its own, and a few are recognised wherever they occur under one name (a dtype slip,
    an output size off by one). NotImplementedError means "not done".

    Score: each exercise is worth `points` and earns the fraction of its checks that pass, or
    nothing when one of its main checks fails (its first, and those marked main: the overlapping
    windows of the pooling backward passes, the checks at scale). The fraction leaves out the checks
    that only some places run (against PyTorch, at scale: cases.Case.counted), so that the points do
    not depend on whether PyTorch is installed; a check at scale still gates them where it runs
    (grading). The exit status of `check` is 0 only at 100%.
"""

import ast
import errno
import math
import os
import shutil
import sys
import tempfile
import textwrap
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from scratchnst.atomic import reason
from scratchnst.errors import UsageError, UserError
import scratchnst.exercises.casefile as casefile
from scratchnst.exercises.cases import CheckResult, Mistake, judge
from scratchnst.exercises.catalogue import CATALOGUE, Exercise
from scratchnst.exercises.markers import installed_package_dir, make_student_copy as _write_copy, package_regions
from scratchnst.exercises.sandbox import Limits, StudentProcess, bwrap_status, copy_submission, rebuild_around_exercises
from scratchnst.exercises.sandbox import _printable as printable
from scratchnst.exercises.worker import SHOWN_LINES

# Seconds the calls of one exercise may take together. The reference answers take milliseconds on
# these inputs and a plain-loop answer well under a second; what runs longer is stuck.
DEFAULT_TIMEOUT = 10.0
# Seconds importing the student's package may take: its own budget, with its own message.
DEFAULT_IMPORT_TIMEOUT = 60.0
# The longest time limit taken (11 days: no limit in practice); cli.parser.MAX_SECONDS, the same (tests check it).
# Beyond about 9e9 s a watchdog timer cannot be set at all.
MAX_SECONDS = 10**6


# ====================================================================== grading a copy
@dataclass
class ExerciseResult:
    """One exercise's checks. It earns its points in proportion to the checks that pass, and none
    at all when a main case (its own question, see cases.Case.main) fails."""

    exercise: Exercise
    checks: list
    hint: str  # from the HINT lines of the reference source
    main: list = None  # indices of the main cases; None: the first one
    counted: list = None  # indices of the checks the points follow (cases.Case.counted); None: all

    @property
    def passed(self):
        return sum(c.status == "ok" for c in self.checks)

    @property
    def uncounted(self):
        """Whether some checks are left out of the points (cases.Case.counted)."""
        return self.counted is not None and len(self.counted) < len(self.checks)

    @property
    def passed_counted(self):
        return sum(self.checks[i].status == "ok" for i in (self.counted or ()) if i < len(self.checks))

    @property
    def main_failed(self):
        main = [0] if self.main is None else self.main
        return any(self.checks[i].status != "ok" for i in main if i < len(self.checks))

    @property
    def points(self):
        if not self.checks or self.main_failed:
            return 0.0
        counted = (self.checks if self.counted is None
                   else [self.checks[i] for i in self.counted if i < len(self.checks)])
        if not counted:  # only gates, all passed
            return float(self.exercise.points)
        return self.exercise.points * sum(c.status == "ok" for c in counted) / len(counted)

    @property
    def status(self):
        if self.checks and self.passed == len(self.checks):
            return "pass"
        if self.checks and all(c.status == "not done" for c in self.checks):
            return "not done"
        return "fail"

    @property
    def mistakes(self):
        return list(dict.fromkeys(m for c in self.checks for m in c.mistakes))


@dataclass
class Report:
    """The grading of one student copy."""

    root: Path  # the folder holding the graded scratchnst/
    results: list
    ungraded: list  # names of marked functions the grader has no checks for
    torch: str  # "PyTorch 2.13.0", or why PyTorch was not used
    against: str = "the installed scratchnst"  # what the answers were compared with
    notes: list = field(default_factory=list)  # files of the submission left out, the containment used
    seconds: float = 0.0

    @property
    def points(self):
        return sum(r.points for r in self.results)

    @property
    def total(self):
        return sum(r.exercise.points for r in self.results)

    @property
    def perfect(self):
        return bool(self.results) and all(r.status == "pass" for r in self.results)

    @property
    def percent(self):
        if self.perfect:
            return 100
        # floor, so that 99.9% never shows as 100%
        return min(99, math.floor(100 * self.points / self.total + 1e-9)) if self.total else 0


@dataclass
class CaseSet:
    """What a submission is graded against: for each exercise its hint and its Cases."""

    entries: list  # (Exercise, hint, [Case])
    ungraded: list
    torch: str
    against: str


def _reference():
    """The installed package's modules: the reference answers and the tools to check against."""
    from scratchnst import costs, gradcheck, layers, optim, torch_ref

    return SimpleNamespace(layers=layers, costs=costs, optim=optim, gradcheck=gradcheck, torch_ref=torch_ref)


def _choose(exercises, only):
    if not only:
        return list(exercises)
    if "" in only:  # "" is part of every name: it would select everything, silently
        raise UsageError("--only '': give part of an exercise's name, e.g. --only relu")
    def matches(e, name):
        # a whole name picks that exercise alone (gram_matrix, not gram_matrix_backward too); part of a
        # name picks every exercise it is part of (--only pool)
        exact = [x for x in exercises if name in (x.name, x.function)]
        return e in exact if exact else name in e.name

    chosen = [e for e in exercises if any(matches(e, name) for name in only)]
    if not chosen:
        raise UsageError(f"no exercise matches {', '.join(only)}; the exercises are "
                         f"{', '.join(e.function for e in CATALOGUE)}")
    return chosen


def reference_cases(only=None, use_torch=True, salt=None):
    """The CaseSet of the installed package's marked exercises, computed from its answers.

    salt: None for the inputs `check` always uses; a number for other inputs of the same kinds (a
        teacher's `grade` draws one per run, so values shipped with the student copy or seen in
        an earlier run cannot be replayed).

    Raises UsageError when the installed package is a student copy (no answers to compute with).
    """
    package_dir = installed_package_dir()
    regions = package_regions(package_dir)
    if not regions:
        raise UsageError(f"the scratchnst running this command ({package_dir}) has no solution regions: it is a "
                         "student copy, and a student copy has no reference values shipped with it either "
                         "(make it again with `scratchnst exercises make`)")
    hints = defaultdict(list)
    for r in regions:
        if r.hint:
            hints[(r.module, r.function)].append(r.hint)
    marked = {(r.module, r.function) for r in regions}
    chosen = _choose([e for e in CATALOGUE if (e.module, e.function) in marked], only)
    ungraded = [] if only else sorted(f"{m}.{f}" for m, f in marked - {(e.module, e.function) for e in CATALOGUE})
    ref = _reference()
    have_torch = use_torch and ref.torch_ref.available()
    if have_torch:
        import torch  # only for its version: the checks call torch through torch_ref

        torch_note = f"PyTorch {torch.__version__}"
    else:
        torch_note = "not PyTorch (" + ("--no-torch" if not use_torch else "not installed") + ")"
    entries = []
    for exercise in chosen:
        # one seed per exercise, fixed by its name: the inputs do not depend on which exercises are graded
        seed = zlib.crc32(exercise.name.encode())
        rng = np.random.default_rng(seed if salt is None else [seed, salt])
        with np.errstate(all="ignore"):  # some modelled mistakes divide by zero or take sqrt(-x): they should
            cases = exercise.cases(ref, rng, have_torch)
        entries.append((exercise, " ".join(hints[(exercise.module, exercise.function)]), cases))
    return CaseSet(entries, ungraded, torch_note, "the installed scratchnst")


def shipped_cases(package_dir, only=None):
    """The CaseSet shipped with a student copy (made by `exercises make`), or None if there is none."""
    loaded = casefile.load(Path(package_dir))
    if loaded is None:
        return None
    by_name = {e.name: e for e in CATALOGUE}
    entries = [(by_name[name], hint, cases) for name, hint, cases in loaded if name in by_name]
    chosen = {e.name for e in _choose([e for e, _, _ in entries], only)}
    return CaseSet([entry for entry in entries if entry[0].name in chosen], [],
                   "not PyTorch (the reference values shipped with the copy)",
                   "the reference values shipped with the copy")


def student_root(directory):
    """The folder that holds the student's scratchnst/ (DIR, or DIR's parent if DIR is the package)."""
    if os.fspath(directory) == "":
        raise UsageError("DIR '': give the folder of a student copy, or leave DIR out for the current folder")
    path = Path(directory)
    try:
        path.stat()
    except OSError as error:
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            raise UserError(f"{path}: no such folder; give the folder of a student copy (scratchnst exercises "
                            "make DIR)") from None
        raise UserError(f"cannot read {path} ({reason(error)}); give the folder of a student copy") from None
    if not path.is_dir():
        raise UserError(f"{path} is not a folder: give the folder of a student copy (scratchnst exercises make DIR)")
    if (path / "scratchnst" / "__init__.py").is_file() and not (path / "scratchnst").is_symlink():
        return path.resolve()
    if path.resolve().name == "scratchnst" and (path / "__init__.py").is_file():
        return path.resolve().parent
    raise UserError(f"{path} holds no scratchnst package ({path / 'scratchnst' / '__init__.py'} is missing): "
                    f"make a student copy with `scratchnst exercises make {path}`")


def check_containment(contained, uncontained_ok):
    """Whether to run in bubblewrap: True, or False when allowed; UsageError in one line otherwise."""
    if not contained:
        return False
    usable, why = bwrap_status()
    if usable:
        return True
    if uncontained_ok:
        return False
    fix = ("install bubblewrap (apt-get install bubblewrap)" if "not installed" in why
           else "let bubblewrap run here (it needs root or unprivileged user namespaces)")
    raise UsageError(f"{why}: the students' code would run uncontained (it could read the answers and the "
                     f"teacher's files); {fix}, or add --uncontained to grade anyway")


def grade(directory=".", only=None, timeout=DEFAULT_TIMEOUT, use_torch=True, *, cases=None, contained=False,
          limits=Limits(), import_timeout=DEFAULT_IMPORT_TIMEOUT, budget=None, salt=None):
    """Grade the student copy in DIRECTORY; return a Report.

    Args:
        directory: the folder holding the student's scratchnst/ (or that package folder itself).
        only: None, or names; an exercise is graded when one of them is its name, or, if no
            exercise has that name, part of its name
            ("relu", "costs.gram_matrix").
        timeout: seconds the calls of one exercise may take together.
        use_torch: also check against PyTorch when it is installed.
        cases: a CaseSet to grade against (batch grading computes it once); default: the
            installed package's answers, or, in a student copy, the values shipped with it.
        contained: run the student's code in bubblewrap (sandbox.py; see `check_containment`).
        limits: the child's resource limits (sandbox.Limits).
        import_timeout: seconds importing the package may take.
        budget: seconds all of this student's calls may take together (None: no total budget).
        salt: see `reference_cases`.

    Raises:
        UsageError: a time limit not in (0, MAX_SECONDS], `only` matches no exercise, or nothing to grade against.
        UserError: DIRECTORY is missing, not a folder, or holds no scratchnst package.
    """
    for flag, value in (("--timeout", timeout), ("--import-timeout", import_timeout), ("--budget", budget)):
        if value is not None and not 0 < value <= MAX_SECONDS:
            raise UsageError(f"{flag} must be a number of seconds above 0 and at most {MAX_SECONDS:,}, got {value:g}; "
                             f"e.g. {flag} 10")
    root = student_root(directory)
    if cases is None:
        package_dir = installed_package_dir()
        # a student copy is told by the values shipped with it, not by markers: a student may have
        # written their answer between markers of their own, or copied an answer key's file in
        cases = shipped_cases(package_dir, only)
        if cases is None and package_regions(package_dir):
            cases = reference_cases(only, use_torch, salt)
        if cases is None:
            raise UsageError(f"the scratchnst running this command ({package_dir}) is a student copy without "
                             "the reference values that `scratchnst exercises make` ships with it: make the "
                             "copy again, or install the scratchnst that has the answers")
    started = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="scratchnst-grade-"))
    os.chmod(scratch, 0o711)   # the worker may run as another user (sandbox.sandbox_user): it passes through
    try:
        try:
            submission = copy_submission(root / "scratchnst", scratch / "submission")
            rebuild_around_exercises(submission, installed_package_dir(), sorted({e.module for e in CATALOGUE}))
        except OSError as error:
            raise UserError(f"cannot copy {root / 'scratchnst'} to a scratch folder ({reason(error)}); "
                            "free some space in the temporary folder") from None
        modules = list(dict.fromkeys(e.module for e, _, _ in cases.entries))
        results = []
        left = math.inf if budget is None else budget
        if budget is not None:  # the CPU-time backstop must not cut a budget the teacher gave
            limits = replace(limits, cpu_seconds=max(limits.cpu_seconds, int(budget + import_timeout) + 60))
        with StudentProcess(submission, contained, limits, modules, import_timeout) as student:
            for exercise, hint, exercise_cases in cases.entries:
                result, spent = _grade_exercise(student, exercise, hint, exercise_cases, timeout, left)
                left -= spent
                results.append(result)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    notes = list(submission.notes)
    return Report(root, results, cases.ungraded, cases.torch, cases.against, notes, time.monotonic() - started)


def _params(exercise):
    """The names of the exercise function's parameters, read from the running package's source (not
    imported: in a student copy that checks itself, that source is the student's code); [] if unknown."""
    path = installed_package_dir() / f"{exercise.module.replace('.', '/')}.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == exercise.function:
            a = node.args
            return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    return []


def _grade_exercise(student, exercise, hint, cases, timeout, left):
    """Run every check of one exercise in the student's process: (ExerciseResult, seconds used)."""
    params = _params(exercise)
    budget, checks, spent, printed = timeout, [], 0.0, 0
    for case in cases:
        if left - spent <= 0:
            checks.append(judge({"status": "budget"}, case, params))
            continue
        if budget <= 0:
            checks.append(CheckResult(case.label, "timeout", details=["not run: the exercise's time ran out"]))
            continue
        imported = student.import_seconds
        answer, seconds = student.call(exercise.module, exercise.function, case.args, case.kwargs,
                                       min(budget, left - spent), total=left - spent, printed=printed)
        printed += answer.get("printed_bytes", 0)   # the exercise's calls share one limit on output
        if answer["status"] == "timeout" and left - spent - seconds <= 0 and budget - seconds > 0:
            answer = {"status": "budget"}
        budget -= seconds
        # a new child's imports ran the student's code: they count against the total (--budget), not
        # against this exercise's --timeout (a first import on a loaded machine is no endless loop)
        spent += seconds + (student.import_seconds - imported)
        checks.append(judge(answer, case, params))
    main = [i for i, c in enumerate(cases) if c.main or (i == 0 and c.main is None)]
    counted = [i for i, c in enumerate(cases) if c.counted]
    return ExerciseResult(exercise, checks, hint, main, counted), spent


# ======================================================================== the report
_WORD = {"ok": "ok", "fail": "FAIL", "error": "ERROR", "not done": "todo", "timeout": "TIMEOUT"}


def _points(x):
    return f"{round(x, 1):g}"


def _printed(result):
    """The lines that show what an exercise's calls printed: at most SHOWN_LINES lines of it, enough to
    debug with, and a bounded report however much the code prints (the worker keeps each call's start)."""
    lines, left = [], SHOWN_LINES
    for check in result.checks:
        if not check.printed_lines:
            continue
        if left <= 0:
            lines.append("(later checks printed too: not shown)")
            break
        shown = check.printed[:left]
        first = f"; the first {len(shown)}" if check.printed_lines > len(shown) else ""
        plural = "s" if check.printed_lines != 1 else ""
        lines.append(f"printed during {check.label} ({check.printed_lines} line{plural}{first}):")
        lines += [f"| {line}" for line in shown]
        left -= len(shown)
    return lines


def print_report(report, stream=None, show_printed=False):
    """Print the report: every exercise with its checks, a summary, the score.

    show_printed: under each exercise, the first lines its calls printed (the self-check: the
        student debugs with print(); a teacher's report of a class leaves them out).
    """
    out = stream or sys.stdout

    def say(text="", indent="", wrap=True):
        # what the student's code said (messages, type names) may hold terminal escapes: shown as \x..
        text = printable(text, 10**6)
        # explanations and hints wrap under their own indentation; a check's line stays one line
        if wrap and text:
            text = textwrap.fill(text, 110, initial_indent=indent, subsequent_indent=indent + "    ",
                                 break_long_words=False, break_on_hyphens=False)
        print(text if wrap else indent + text, file=out)

    say(f"grading {report.root / 'scratchnst'} against {report.against}", wrap=False)
    say(f"seeded float64 inputs; compared with the reference solution, finite differences, {report.torch}")
    for note in report.notes:
        say(f"note: {note}")
    status_of = {r.exercise.function: r.status for r in report.results}
    for number, result in enumerate(report.results, 1):
        e = result.exercise
        head = f"{number:2d}. {e.name}"
        verdict = {"pass": "pass", "not done": "not done", "fail": f"{result.passed}/{len(result.checks)} checks"
                   + (f" ({result.passed_counted}/{len(result.counted)} counted)" if result.uncounted else "")}
        say()
        say(f"{head:<58} {_points(result.points):>4}/{e.points} points   {verdict[result.status]}", wrap=False)
        if result.status == "fail" and result.main_failed and result.passed:
            say("no points: a main check (the exercise's own question) fails", "      ")
        if result.status == "not done":
            first = result.checks[0]
            calls = f"calls {first.function}, which " if first.function not in ("", e.function) else ""
            say(f"not done: {calls}raises NotImplementedError ({first.where})", "      ")
        else:
            shown, explained = None, set()
            for check in result.checks:
                compared = check.error is not None and check.status in ("ok", "fail")
                # two measures, named apart: rel_error (lesson 2's, at most 1) and, for float32 and
                # finite differences, the largest difference over the largest expected value
                measure = "max error / largest value" if check.normwise else "max rel error"
                error = f"   ({measure} {check.error:.1e})" if compared else ""
                say(f"{_WORD[check.status]:<7} {check.label}{error}", "      ", wrap=False)
                if check.details == shown and check.status in ("error", "not done", "timeout"):
                    continue  # the same exception again: said once is enough
                for line in check.details:
                    if isinstance(line, Mistake):  # explained once per exercise, then named
                        seen = line.name in explained
                        explained.add(line.name)
                        line = f"mistake: {line.name}" + (" (explained above)" if seen else f": {line.why}")
                    say(line, " " * 14)
                shown = check.details
        for line in _printed(result) if show_printed else []:
            say(line, "      ", wrap=False)
        if result.status != "pass":
            case_hints = list(dict.fromkeys(c.hint for c in result.checks if c.hint and c.status != "ok"))
            for text in case_hints or ([result.hint] if result.hint else []):
                say(f"hint: {text}", "      ")
            for used in e.uses:
                if result.status == "fail" and status_of.get(used, "pass") != "pass":
                    say(f"note: this function usually calls {used}, which does not pass yet: fix that first", "      ")
    say()
    if report.ungraded:
        say(f"not graded (no automatic checks yet): {', '.join(report.ungraded)}")
    passing = sum(r.status == "pass" for r in report.results)
    say(f"score: {_points(report.points)}/{report.total} points ({report.percent}%); "
        f"{passing} of {len(report.results)} exercises pass")


def make_student_copy(dest, force=False, solutions=False, selfcheck=True):
    """markers.make_student_copy, and in a student copy the reference values of its checks (casefile.py).

    selfcheck: ship the values that let `scratchnst exercises check` grade the copy where no answer
        key is installed (not needed in an answer key, which has the answers).
    """
    def ship_values(package):
        entries = [(exercise, hint, [case for case in cases if not case.graded_only])
                   for exercise, hint, cases in reference_cases(use_torch=False).entries]
        casefile.write(package, entries)

    return _write_copy(dest, force=force, solutions=solutions,
                       extra=ship_values if selfcheck and not solutions else None)


def run_check(directory=".", only=None, timeout=DEFAULT_TIMEOUT, use_torch=True, stream=None,
              import_timeout=DEFAULT_IMPORT_TIMEOUT):
    """`scratchnst exercises check`: self-check one copy, print the report; exit status 0 only at 100%."""
    report = grade(directory, only=only, timeout=timeout, use_torch=use_torch, import_timeout=import_timeout)
    print_report(report, stream, show_printed=True)
    return 0 if report.perfect else 1


def run_make(directory, force=False, solutions=False, stream=None):
    """`scratchnst exercises make`: write the copy, say what was written; exit status 0."""
    out = stream or sys.stdout
    regions = make_student_copy(directory, force=force, solutions=solutions)
    per_file = defaultdict(list)
    for r in regions:
        if r.function not in per_file[r.module]:
            per_file[r.module].append(r.function)
    counts = ", ".join(f"{m.replace('.', '/')}.py {len(f)}" for m, f in per_file.items())
    total = sum(len(f) for f in per_file.values())
    what = "an answer key (solutions kept)" if solutions else "a student copy"
    print(f"wrote {what} of scratchnst to {Path(directory) / 'scratchnst'}: {total} exercises ({counts})", file=out)
    print(f"{Path(directory) / 'README.md'} says what to do; a student checks the copy with `python -m scratchnst "
          f"exercises check` in {directory} (no answer key needed); you grade submissions with `scratchnst "
          "exercises grade FOLDER...`", file=out)
    return 0

