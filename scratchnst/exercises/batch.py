"""Grading a class: many submissions in one command, contained and in parallel, and the exports.

`scratchnst exercises grade DIR...` takes submission folders (each holds a scratchnst/), or folders
of them (uploads.py finds them), computes the checks once from the installed answers on inputs drawn for this run, and
grades every submission in its own sandbox (sandbox.py), several at a time. It prints a table and
writes, on request, CSV, JSON and Gradescope's results.json. `write_gradescope_bundle` writes the
setup.sh / run_autograder pair (and the answer key) that Gradescope runs for each submission.
"""

import csv
import hashlib
import io
import itertools
import os
import secrets
import shutil
import sys
import time
import unicodedata
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scratchnst import json_text
from scratchnst.atomic import check_output, folder_problem, reason, write_bytes
from scratchnst.errors import UsageError, UserError
from scratchnst.exercises.grading import (DEFAULT_IMPORT_TIMEOUT, DEFAULT_TIMEOUT, MAX_SECONDS, check_containment,
                                          grade, print_report, reference_cases)
from scratchnst.exercises.markers import installed_package_dir, make_student_copy
from scratchnst.exercises.sandbox import LEAST_MEMORY_MB, Limits, _printable, nobody_can_run
from scratchnst.exercises.uploads import NotASubmission, find_submissions

# Seconds all the calls of one submission may take together (each exercise also has its own).
DEFAULT_BUDGET = 240.0


def grade_class(submissions, only=None, timeout=DEFAULT_TIMEOUT, import_timeout=DEFAULT_IMPORT_TIMEOUT,
                budget=DEFAULT_BUDGET, jobs=None, contained=True, limits=Limits(), use_torch=True, seed=None,
                progress=None):
    """Grade every (name, folder); return [(name, Report or None, error message or None)] in the given order.

    A folder that is a NotASubmission (find_submissions) is not graded: its outcome is its message.

    seed: draws the inputs (None: a fresh one for this run). The same seed gives the same inputs.
    jobs: submissions graded at a time. Time budgets are wall-clock, so a submission that burns every
        core can make a slow but honest neighbour run out of time: when jobs > 1, each submission with a
        check that timed out is graded again afterwards, alone and on the same inputs, and that second
        grading is kept (its report says so in a note).
    progress: called once per submission, with the outcome that is kept (a regraded one's after its
        second grading).
    """
    salt = secrets.randbits(32) if seed is None else seed
    cases = reference_cases(only, use_torch, salt)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(submissions)))

    def one(item):
        name, folder = item
        if isinstance(folder, NotASubmission):
            return name, None, str(folder)
        try:
            report = grade(folder, only=only, timeout=timeout, cases=cases, contained=contained, limits=limits,
                           import_timeout=import_timeout, budget=budget)
            return name, report, None
        except (UserError, UsageError) as error:
            return name, None, str(error)
        except Exception as error:  # noqa: BLE001 - one submission must never stop the class
            return name, None, f"not graded: the grader failed on it ({type(error).__name__}: {error})"[:300]

    def needs_regrading(outcome):
        # a timeout of any kind (a call, the exercise's time, the total budget, the import) may be the neighbours'
        report = outcome[1]
        return jobs > 1 and report is not None and any(c.status == "timeout" for r in report.results for c in r.checks)

    def first(item):
        outcome = one(item)
        if progress and not needs_regrading(outcome):
            progress(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        outcomes = list(pool.map(first, submissions))
    # one at a time, in the given order, with nothing else running: a submission's time is its own
    for i, item in enumerate(submissions):
        if not needs_regrading(outcomes[i]):
            continue
        before = outcomes[i][1]
        _, report, _ = outcomes[i] = one(item)
        if report is not None:
            report.notes.append(f"graded again, alone: a check ran out of time while {jobs} submissions were "
                                f"graded at a time ({before.points:.1f}/{before.total} points then); this grading "
                                "is the one kept")
        if progress:
            progress(outcomes[i])
    return outcomes


# ================================================================================= exports
# The names of a class are its folders' names, chosen by the students or by whatever unpacked their uploads:
# every export shows them in one form (`_shown_name`), which a file can always hold and a spreadsheet never
# runs. The free text (messages, notes) can quote such names and is made writable the same way (`_shown_text`).
def _shown_name(name):
    """name as the exports and the table show it: text any UTF-8 file can hold, and no two names alike.

    A folder name that is not valid UTF-8 (os.mkdir(b"Jos\\xe9")) reaches Python with each byte it cannot
    decode as a lone surrogate (os.fsdecode's surrogateescape), which no UTF-8 file can hold: such a byte is
    shown as \\xNN, as backslashreplace shows it (Jos\\xe9). A character that prints nothing or moves the
    cursor (a newline, a terminal escape, a zero-width space) is shown as \\n, \\r, \\t or \\uNNNN, so that a
    teacher sees it. A backslash is doubled: a folder literally named `Jos\\xe9` is shown as `Jos\\\\xe9`, and
    each shown name stands for one folder name only. Any other name is shown as it is.
    """
    out = []
    for c in str(name):
        if c == "\\":
            out.append("\\\\")
        elif "\udc80" <= c <= "\udcff":  # a byte that was not UTF-8
            out.append(f"\\x{ord(c) - 0xdc00:02x}")
        elif c in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[c])
        elif not c.isprintable():
            out.append(f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}")
        else:
            out.append(c)
    return "".join(out)


def _shown_text(text):
    """Free text (a message, a note) that a UTF-8 file can hold: a lone surrogate (a byte of a file name that
    was not UTF-8, quoted in a message) as \\xNN or \\uNNNN. Line breaks and backslashes stay: they are part
    of the text, and the text names no one by itself (the student column does)."""
    if text is None:
        return None
    return "".join(f"\\x{ord(c) - 0xdc00:02x}" if "\udc80" <= c <= "\udcff"
                   else f"\\u{ord(c):04x}" if "\ud800" <= c <= "\udfff" else c for c in str(text))


# A cell starting with one of these is a formula to a spreadsheet (=HYPERLINK(...) sends what it is given
# anywhere, =cmd|... ran programs in old Excel). OWASP's list: CSV Injection; and their full-width forms,
# which some spreadsheets in East Asian locales take for the ASCII ones.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(text):
    """A CSV cell of free text that a spreadsheet shows as text: OWASP's leading ' when it would start a
    formula (spreadsheets show the text without it), also after leading spaces, which a spreadsheet may
    trim before it looks. Never given numbers: -1 must stay a number."""
    text = "" if text is None else str(text)
    return "'" + text if text.lstrip(" \u3000").startswith(_FORMULA_STARTS) or text.startswith(("\t", "\r")) \
        else text


def _checks(result):
    return [{"label": c.label, "status": c.status, "error": c.error,
             "details": [_printable(d if isinstance(d, str) else f"mistake: {d.name}: {d.why}", 400)
                         for d in c.details]} for c in result.checks]


def as_json(outcomes):
    """The whole class as one JSON-able list, one dict per submission (names as `_shown_name` shows them)."""
    rows = []
    for name, report, error in outcomes:
        row = {"student": _shown_name(name), "error": _shown_text(error)}
        if report is not None:
            row.update(points=round(report.points, 4), total=report.total, percent=report.percent,
                       seconds=round(report.seconds, 2), notes=[_shown_text(n) for n in report.notes], exercises=[
                           {"name": r.exercise.name, "points": round(r.points, 4), "max": r.exercise.points,
                            "status": r.status, "mistakes": r.mistakes, "checks": _checks(r)}
                           for r in report.results])
        rows.append(row)
    return rows


def as_csv(outcomes):
    """CSV text: one row per submission, a column per exercise's points.

    The names and messages are the students' own text, opened by a teacher in a spreadsheet: each is shown
    as `_shown_name` / `_shown_text` show it, with OWASP's leading ' where it would start a formula (`_cell`),
    and every cell is quoted, so that a spreadsheet that splits on ; (the CSV separator of many locales)
    cannot make `x;=HYPERLINK(...)` two cells, the second a formula.
    """
    names = []
    for _, report, _ in outcomes:
        for r in report.results if report else []:
            if r.exercise.name not in names:
                names.append(r.exercise.name)
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_ALL)
    writer.writerow(["student", "points", "total", "percent", "seconds", "error"] + [_cell(n) for n in names])
    for name, report, error in outcomes:
        student = _cell(_shown_name(name))
        if report is None:  # not graded: no points at all (a 0 would read as a grade), as in the JSON export
            writer.writerow([student, "", "", "", "", _cell(_shown_text(error))] + [""] * len(names))
            continue
        points = {r.exercise.name: f"{r.points:.2f}" for r in report.results}
        writer.writerow([student, f"{report.points:.2f}", report.total, report.percent, f"{report.seconds:.1f}", ""]
                        + [points.get(n, "") for n in names])
    return out.getvalue()


def as_gradescope(report, error=None, student=None):
    """Gradescope's results.json for one submission: a test per exercise, the score their sum.

    student: the submission's name, kept in extra_data (Gradescope stores it and shows it to no one) where
    one file of a folder of them must say whose it is; None for the results.json of a Gradescope run.
    """
    if report is None:
        result = {"score": 0, "output": _printable(_shown_text(error) or "not graded", 2000), "tests": []}
    else:
        tests = []
        for r in report.results:
            text = io.StringIO()
            for check in r.checks:
                text.write(f"{check.status}: {check.label}\n")
                for d in check.details:
                    text.write("    " + _printable(d if isinstance(d, str) else f"mistake: {d.name}: {d.why}", 400)
                               + "\n")
            tests.append({"name": r.exercise.name, "score": round(r.points, 4), "max_score": r.exercise.points,
                          "status": "passed" if r.status == "pass" else "failed", "output": text.getvalue()})
        summary = f"{report.points:.1f}/{report.total} points ({report.percent}%)"
        if report.notes:
            summary += "\n" + "\n".join(f"note: {_shown_text(n)}" for n in report.notes)
        result = {"score": round(report.points, 4), "execution_time": round(report.seconds, 2), "output": summary,
                  "tests": tests}
    if student is not None:
        result["extra_data"] = {"student": _shown_name(student)}
    return result


def _file_stem(name):
    """name as a plain file name: letters, digits, - _ . kept, anything else _, at most 100 bytes of UTF-8
    (a file name may have 255, and a suffix and .json follow)."""
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return stem.encode("utf-8")[:100].decode("utf-8", "ignore")


def gradescope_file_names(names):
    """The file of each name (in their order) in a --gradescope FOLDER: two names never share one, and the
    same names always get the same files.

    A name that is a plain file name already (`_file_stem` leaves it as it is) keeps it, so that a teacher
    finds it at once. Any other name is made one and given -<8 hex digits of the SHA-256 of its shown
    name>: `a b` and `a_b` would otherwise both be a_b.json, and one student's results would replace the
    other's. Names are compared ignoring case, as the folder's file system may (macOS, Windows, a USB
    stick), and taken in sorted order, so that the files depend on the set of names only. If a suffixed
    name is taken anyway (a folder named after another one's hash), a longer hash, then a count, is used.
    """
    files, taken = [None] * len(names), set()
    order = sorted(range(len(names)), key=lambda i: (names[i], i))
    for i in order:
        stem = _file_stem(names[i])
        if stem == names[i] and stem.casefold() not in taken:
            files[i] = stem
            taken.add(stem.casefold())
    for i in order:
        if files[i] is None:
            base, digest = _file_stem(names[i]), hashlib.sha256(_shown_name(names[i]).encode("utf-8")).hexdigest()
            candidates = itertools.chain((f"{base}-{digest[:width]}" for width in (8, 16, 64)),
                                         (f"{base}-{digest}-{count}" for count in itertools.count(2)))
            files[i] = next(stem for stem in candidates if stem.casefold() not in taken)
            taken.add(files[i].casefold())
    return [f"{stem}.json" for stem in files]


def _write(path, text, what):
    """Write text to path atomically (scratchnst.atomic); UserError in one line when it cannot be written."""
    # The exports hold only shown text, so strict UTF-8 would do; backslashreplace is the guard that keeps a
    # lone surrogate that got through from costing the teacher the whole file.
    write_bytes(path, text.encode("utf-8", "backslashreplace"), what)


def _write_gradescope_folder(folder, outcomes):
    """One results.json per submission in folder, named by gradescope_file_names; every file is tried, and a
    UserError afterwards names the first that could not be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot make the Gradescope folder {folder}: {reason(error)}; give a folder that can be "
                        "made (or a FILE.json for one submission)") from None
    failed = []
    for (name, rep, error), file in zip(outcomes, gradescope_file_names([n for n, _, _ in outcomes])):
        try:
            _write(folder / file, json_text.dumps(as_gradescope(rep, error, student=name), indent=1), "Gradescope file")
        except UserError as problem:
            failed.append(str(problem))
    if failed:
        more = f" (and {len(failed) - 1} other Gradescope files)" if len(failed) > 1 else ""
        raise UserError(failed[0] + more)


def _look_alike(names):
    """Pairs of different names that are one name in Unicode's composed form (NFC): José and Jose + U+0301."""
    first = {}
    pairs = []
    for name in names:
        key = unicodedata.normalize("NFC", name)
        if key in first and first[key] != name:
            pairs.append((first[key], name))
        first.setdefault(key, name)
    return pairs


def _other_results(gradescope, outcomes):
    """The .json files of the --gradescope folder that this run's outcomes did not write (sorted names)."""
    if not gradescope or Path(gradescope).suffix == ".json":
        return []
    written = set(gradescope_file_names([n for n, _, _ in outcomes]))
    try:
        return sorted(p.name for p in Path(gradescope).glob("*.json") if p.name not in written)
    except OSError:
        return []


def write_exports(outcomes, csv_path=None, json_path=None, gradescope=None):
    """Write the exports asked for; return one line per export that could not be written (empty: all were).

    Each is tried whatever became of the others: a CSV file in a missing folder must not cost the teacher
    the JSON file and the Gradescope files of a class that took minutes to grade.
    """
    exports = []
    if csv_path:
        exports.append(("CSV file", lambda: _write(csv_path, as_csv(outcomes), "CSV file")))
    if json_path:
        exports.append(("JSON file", lambda: _write(json_path, json_text.dumps(as_json(outcomes), indent=1), "JSON file")))
    if gradescope and len(outcomes) == 1 and Path(gradescope).suffix == ".json":
        exports.append(("Gradescope file", lambda: _write(
            gradescope, json_text.dumps(as_gradescope(outcomes[0][1], outcomes[0][2]), indent=1), "Gradescope file")))
    elif gradescope:
        exports.append(("Gradescope folder", lambda: _write_gradescope_folder(gradescope, outcomes)))
    failures = []
    for what, export in exports:
        try:
            export()
        except UserError as error:
            failures.append(str(error))
        except Exception as error:  # noqa: BLE001 - a bug in one export must not cost the others
            failures.append(f"the {what} was not written: internal error ({type(error).__name__}: {error}); this is "
                            "a bug in scratchnst: run the command again with --debug and report the traceback")
    # one line each, as the command line shows its errors; a path may hold a line break or a stray byte
    return [_shown_text(f).replace("\r", "\\r").replace("\n", "\\n") for f in failures]


def _check_exports(csv_path, json_path, gradescope):
    """Refuse, before a class is graded, an export that could not be written at the end (a missing or
    read-only folder, a folder where a file is asked for, two exports into one file): the grading may
    take minutes."""
    files = [(flag, Path(path)) for flag, path in (("--csv", csv_path), ("--json", json_path),
                                                   ("--gradescope", gradescope)) if path]
    for k, (flag, path) in enumerate(files):
        for other, other_path in files[k + 1:]:
            if os.path.abspath(path) == os.path.abspath(other_path) or (
                    path.exists() and other_path.exists() and path.samefile(other_path)):
                raise UsageError(f"{flag} and {other} name the same file, {path}: one would replace the "
                                 "other; give each its own")
    for flag, path, example in (("--csv", csv_path, "grades.csv"), ("--json", json_path, "grades.json"),
                                ("--gradescope", gradescope if gradescope and Path(gradescope).suffix == ".json"
                                 else None, "results.json")):
        if path:
            check_output(flag, path, example=example)
    if gradescope and Path(gradescope).suffix != ".json":
        folder = Path(gradescope)
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--gradescope {folder}: is a file, not a folder; give a folder (or a FILE.json for one "
                             "submission)")
        problem = folder_problem(folder)  # a folder that does not exist yet is made at the end
        if problem and problem != f"folder {folder} does not exist":
            raise UserError(f"cannot write --gradescope {folder}: {problem}; choose another folder")
        existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
        if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"cannot write --gradescope {folder}: folder {existing} is not writable; choose another "
                            "folder")


def print_table(outcomes, stream):
    """The class as a table; names as the exports show them (`_shown_name`), so that a row is found in them."""
    shown = [_printable(_shown_name(n)) for n, _, _ in outcomes]
    width = max([len(n) for n in shown] + [7])
    print(f"{'student':<{width}}  {'points':>9}  {'%':>4}  {'seconds':>7}  notes", file=stream)
    for name, (_, report, error) in zip(shown, outcomes):
        if report is None:
            print(f"{name:<{width}}  {'-':>9}  {'-':>4}  {'-':>7}  {_printable(_shown_text(error), 120)}", file=stream)
            continue
        failing = [r.exercise.function for r in report.results if r.status != "pass"]
        notes = "all pass" if not failing else f"{len(failing)} not passing: {', '.join(failing[:4])}"
        notes += "..." if len(failing) > 4 else ""
        score = f"{report.points:.1f}/{report.total}"
        print(f"{name:<{width}}  {score:>9}  {report.percent:>4}  {report.seconds:>7.1f}  {notes}", file=stream)


def run_grade(paths, only=None, timeout=DEFAULT_TIMEOUT, import_timeout=DEFAULT_IMPORT_TIMEOUT,
              budget=DEFAULT_BUDGET, jobs=None, uncontained=False, memory_mb=Limits.memory_mb, use_torch=True,
              seed=None, csv_path=None, json_path=None, gradescope=None, report=False, stream=None):
    """`scratchnst exercises grade`: grade the class, print the table, write the exports.

    Returns the exit status: 0 when every submission was graded, 1 when one could not be (its row says why).
    Raises UserError when an export could not be written, after trying all of them (the others are written);
    each failure but the last is printed as a line of its own first, as the command line prints the last.
    """
    out = stream or sys.stdout
    for flag, value in (("--timeout", timeout), ("--import-timeout", import_timeout), ("--budget", budget)):
        if not 0 < value <= MAX_SECONDS:
            raise UsageError(f"{flag} must be a number of seconds above 0 and at most {MAX_SECONDS:,}, got {value:g}")
    if seed is not None and not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be an integer from 0 to 2**63 - 1, got {seed}")
    if jobs is not None and not jobs >= 1:
        raise UsageError(f"--jobs must be at least 1, got {jobs}")
    if not memory_mb >= LEAST_MEMORY_MB:
        raise UsageError(f"--memory must be at least {LEAST_MEMORY_MB} MB (Python and NumPy alone need about 160), "
                         f"got {memory_mb}")
    _check_exports(csv_path, json_path, gradescope)
    # Gradescope's FILE.json: one student's upload, whatever else it holds beside its scratchnst/
    left_out = []
    submissions = find_submissions(paths, one=bool(gradescope) and Path(gradescope).suffix == ".json",
                                   left_out=left_out)
    if left_out:   # before the grading, which may take minutes: the teacher can stop it and move a file
        names = ", ".join(_printable(_shown_text(str(p.name)), 80) for p in left_out[:8])
        more = f" and {len(left_out) - 8} more" if len(left_out) > 8 else ""
        print(f"note: left out {len(left_out)} entr{'y' if len(left_out) == 1 else 'ies'} that look like no upload "
              f"(no row): {names}{more}; a student's upload among them? put it in a folder of its own, unpacked, "
              "then grade again", file=sys.stderr)
    alike = _look_alike([name for name, _ in submissions])
    if alike:   # the table and the exports would show two rows of one name
        print(f"note: {len(alike)} pair(s) of names look the same but are spelt with other characters (a letter "
              f"with its accent composed or not): {'; '.join(' and '.join(map(ascii, pair)) for pair in alike[:3])}; "
              "each is graded as its own folder: tell them apart by the folders' names", file=sys.stderr)
    contained = check_containment(True, uncontained)
    if not contained:
        if nobody_can_run():
            print("warning: running the submissions UNCONTAINED (--uncontained), each as an unprivileged user of "
                  "its own: their code can read whatever every user may read, reach the network, and with --jobs "
                  "above 1 slow the others down", file=sys.stderr)
        else:
            print("warning: running the submissions UNCONTAINED (--uncontained): their code can read and change "
                  "whatever you can", file=sys.stderr)
    if gradescope and len(submissions) > 1 and Path(gradescope).suffix == ".json":
        raise UsageError("--gradescope FILE.json takes one submission; for several give a folder")
    started = time.monotonic()

    def progress(outcome):
        name, rep, error = outcome
        what = f"{rep.points:.1f}/{rep.total}" if rep else "not graded"
        print(f"graded {_printable(_shown_name(name))}: {what}", file=sys.stderr, flush=True)

    outcomes = grade_class(submissions, only=only, timeout=timeout, import_timeout=import_timeout, budget=budget,
                           jobs=jobs, contained=contained, limits=Limits(memory_mb=memory_mb),
                           use_torch=use_torch, seed=seed, progress=progress)
    # the exports before the table: a reader that goes away (`| head`, `less` quit early) ends the
    # printing, and must not cost the teacher the files of a class that took minutes to grade
    failures = write_exports(outcomes, csv_path=csv_path, json_path=json_path, gradescope=gradescope)
    stale = _other_results(gradescope, outcomes)
    if stale:   # an earlier run's, of students not in this one: uploaded with the folder, they would count
        print(f"note: the Gradescope folder {gradescope} also holds {len(stale)} file(s) this run did not write "
              f"({', '.join(_printable(_shown_text(n), 80) for n in stale[:5])}{', ...' if len(stale) > 5 else ''}): "
              "an earlier run's? remove them before uploading the folder", file=sys.stderr)
    if report:
        for name, rep, error in outcomes:
            print(f"=== {_printable(_shown_name(name))}", file=out)
            print_report(rep, out) if rep else print(_printable(_shown_text(error), 2000), file=out)
    print_table(outcomes, out)
    graded = sum(rep is not None for _, rep, _ in outcomes)
    counts = f"{graded} submissions" if graded == len(outcomes) else \
        f"{graded} of {len(outcomes)} uploads ({len(outcomes) - graded} could not be: their rows say why)"
    print(f"{counts} graded in {time.monotonic() - started:.1f} s "
          f"({'in bubblewrap' if contained else 'UNCONTAINED, as unprivileged users' if nobody_can_run() else 'UNCONTAINED'})",
          file=out)
    for failure in failures[:-1]:
        print(f"scratchnst: error: {failure}", file=sys.stderr)
    if failures:
        raise UserError(failures[-1])
    return 1 if any(error for _, _, error in outcomes) else 0


# ====================================================================== Gradescope bundle
_SETUP = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image.
set -euo pipefail
apt-get update
apt-get install -y python3 python3-pip bubblewrap
pip3 install --break-system-packages numpy || pip3 install numpy
"""

_RUN = """#!/usr/bin/env bash
# Gradescope runs this for each submission: /autograder/submission holds what the student uploaded
# (their scratchnst/ folder, or a folder holding it); the score goes to /autograder/results/results.json.
set -uo pipefail
cd /autograder/source
SUB=/autograder/submission
if [ ! -d "$SUB/scratchnst" ]; then
  found=$(find "$SUB" -maxdepth 3 -type d -name scratchnst -not -path '*/__MACOSX/*' | head -n 1)
  [ -n "$found" ] && SUB=$(dirname "$found")
fi
# bubblewrap may be refused inside Gradescope's container (no namespaces there); the container is then
# the only wall around the submission, which runs as a plain child process of an unprivileged user: the answer
# key (source/) and the results' folder are closed to every user but root first.
FLAG=""
if ! bwrap --ro-bind / / true 2>/dev/null; then FLAG="--uncontained"; fi
chmod -R go-rwx /autograder/source
mkdir -p /autograder/results && chmod go-w /autograder/results
PYTHONPATH=/autograder/source/source python3 -m scratchnst exercises grade "$SUB" $FLAG \\
  --gradescope /autograder/results/results.json {options}
"""


def check_gradescope_bundle(dest, student_dir):
    """Refuse, before the student copy is written, a bundle folder `make --gradescope` could not use:
    a file, a folder that cannot be written, or one that would put the answer key inside the student
    copy (or the copy inside the bundle's folder, which is replaced)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise UsageError(f"--gradescope {dest}: is a file, not a folder; give the folder to write the bundle into")
    existing = next((p for p in (dest, *dest.absolute().parents) if p.exists()), None)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write --gradescope {dest}: folder {existing} is not writable; choose another folder")
    copy, bundle = Path(os.path.realpath(student_dir)), Path(os.path.realpath(dest))
    for written in (bundle / "gradescope", bundle / "gradescope-autograder.zip"):
        if written == copy or copy in written.parents or written in copy.parents:
            raise UsageError(f"--gradescope {dest} would put the answer key in the student copy {student_dir} (or "
                             "the copy in the bundle's folder): give a folder apart from the copy, not inside it")


def write_gradescope_bundle(dest, options=""):
    """Write dest/gradescope/ (setup.sh, run_autograder, source/scratchnst: the answer key) and
    dest/gradescope-autograder.zip (the same, to upload). Keep both away from students."""
    folder = Path(dest) / "gradescope"
    if folder.exists():
        shutil.rmtree(folder)
    make_student_copy(folder / "source", solutions=True)
    (folder / "source" / "README.md").unlink()
    (folder / "setup.sh").write_text(_SETUP, encoding="utf-8")
    (folder / "run_autograder").write_text(_RUN.format(options=options), encoding="utf-8")
    for script in ("setup.sh", "run_autograder"):
        os.chmod(folder / script, 0o755)
    archive = Path(dest) / "gradescope-autograder.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(str(path.relative_to(folder)))
                info.external_attr = (os.stat(path).st_mode & 0o777) << 16
                z.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    return folder, archive


__all__ = ["DEFAULT_BUDGET", "NotASubmission", "as_csv", "as_gradescope", "as_json", "find_submissions",
           "grade_class", "gradescope_file_names", "installed_package_dir", "run_grade", "write_exports",
           "write_gradescope_bundle"]
