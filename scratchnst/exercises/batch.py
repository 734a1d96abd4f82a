"""Grading a class: many submissions in one command, contained and in parallel, and the exports.

`scratchnst exercises grade DIR...` takes submission folders (each holds a scratchnst/), or folders
of them, computes the checks once from the installed answers on inputs drawn for this run, and
grades every submission in its own sandbox (sandbox.py), several at a time. It prints a table and
writes, on request, CSV, JSON and Gradescope's results.json. `write_gradescope_bundle` writes the
setup.sh / run_autograder pair (and the answer key) that Gradescope runs for each submission.
"""

import csv
import io
import json
import os
import secrets
import shutil
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scratchnst.errors import UsageError, UserError
from scratchnst.exercises.grading import (DEFAULT_IMPORT_TIMEOUT, DEFAULT_TIMEOUT, check_containment, grade,
                                          print_report, reference_cases)
from scratchnst.exercises.markers import installed_package_dir, make_student_copy
from scratchnst.exercises.sandbox import Limits, _printable

# Seconds all the calls of one submission may take together (each exercise also has its own).
DEFAULT_BUDGET = 240.0


def find_submissions(paths):
    """[(name, folder)] of the submissions in paths: a folder holding scratchnst/, or a folder of such folders."""
    found = []
    for given in paths:
        path = Path(given)
        if not path.is_dir():
            raise UserError(f"{path}: no such folder; give submission folders (each holding scratchnst/) "
                            "or a folder of them")
        if (path / "scratchnst").is_dir() and not (path / "scratchnst").is_symlink():
            found.append((path.resolve().name, path))
            continue
        inner = sorted(p for p in path.iterdir() if p.is_dir() and not p.is_symlink()
                       and (p / "scratchnst").is_dir() and not (p / "scratchnst").is_symlink())
        if not inner:
            raise UserError(f"{path} holds no submission: neither {path / 'scratchnst'} nor any "
                            f"{path / '*' / 'scratchnst'}")
        found += [(p.name, p) for p in inner]
    names = [name for name, _ in found]
    if len(set(names)) != len(names):  # two folders of one name: tell them apart by their path
        found = [(str(folder), folder) for _, folder in found]
    return found


def grade_class(submissions, only=None, timeout=DEFAULT_TIMEOUT, import_timeout=DEFAULT_IMPORT_TIMEOUT,
                budget=DEFAULT_BUDGET, jobs=None, contained=True, limits=Limits(), use_torch=True, seed=None,
                progress=None):
    """Grade every (name, folder); return [(name, Report or None, error message or None)] in the given order.

    seed: draws the inputs (None: a fresh one for this run). The same seed gives the same inputs.
    """
    salt = secrets.randbits(32) if seed is None else seed
    cases = reference_cases(only, use_torch, salt)
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(submissions)))

    def one(item):
        name, folder = item
        try:
            report = grade(folder, only=only, timeout=timeout, cases=cases, contained=contained, limits=limits,
                           import_timeout=import_timeout, budget=budget)
            outcome = (name, report, None)
        except (UserError, UsageError) as error:
            outcome = (name, None, str(error))
        except Exception as error:  # noqa: BLE001 - one submission must never stop the class
            outcome = (name, None, f"not graded: the grader failed on it ({type(error).__name__}: {error})"[:300])
        if progress:
            progress(outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, submissions))


# ================================================================================= exports
def _checks(result):
    return [{"label": c.label, "status": c.status, "error": c.error,
             "details": [_printable(d if isinstance(d, str) else f"mistake: {d.name}: {d.why}", 400)
                         for d in c.details]} for c in result.checks]


def as_json(outcomes):
    """The whole class as one JSON-able list, one dict per submission."""
    rows = []
    for name, report, error in outcomes:
        row = {"student": name, "error": error}
        if report is not None:
            row.update(points=round(report.points, 4), total=report.total, percent=report.percent,
                       seconds=round(report.seconds, 2), notes=report.notes, exercises=[
                           {"name": r.exercise.name, "points": round(r.points, 4), "max": r.exercise.points,
                            "status": r.status, "mistakes": r.mistakes, "checks": _checks(r)}
                           for r in report.results])
        rows.append(row)
    return rows


def as_csv(outcomes):
    """CSV text: one row per submission, a column per exercise's points."""
    names = []
    for _, report, _ in outcomes:
        for r in report.results if report else []:
            if r.exercise.name not in names:
                names.append(r.exercise.name)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["student", "points", "total", "percent", "seconds", "error"] + names)
    for name, report, error in outcomes:
        if report is None:
            writer.writerow([name, 0, "", 0, "", error] + [""] * len(names))
            continue
        points = {r.exercise.name: f"{r.points:.2f}" for r in report.results}
        writer.writerow([name, f"{report.points:.2f}", report.total, report.percent, f"{report.seconds:.1f}", ""]
                        + [points.get(n, "") for n in names])
    return out.getvalue()


def as_gradescope(report, error=None):
    """Gradescope's results.json for one submission: a test per exercise, the score their sum."""
    if report is None:
        return {"score": 0, "output": _printable(error or "not graded", 2000), "tests": []}
    tests = []
    for r in report.results:
        text = io.StringIO()
        for check in r.checks:
            text.write(f"{check.status}: {check.label}\n")
            for d in check.details:
                text.write("    " + _printable(d if isinstance(d, str) else f"mistake: {d.name}: {d.why}", 400) + "\n")
        tests.append({"name": r.exercise.name, "score": round(r.points, 4), "max_score": r.exercise.points,
                      "status": "passed" if r.status == "pass" else "failed", "output": text.getvalue()})
    summary = f"{report.points:.1f}/{report.total} points ({report.percent}%)"
    if report.notes:
        summary += "\n" + "\n".join(f"note: {n}" for n in report.notes)
    return {"score": round(report.points, 4), "execution_time": round(report.seconds, 2), "output": summary,
            "tests": tests}


def _write(path, text):
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def print_table(outcomes, stream):
    width = max([len(n) for n, _, _ in outcomes] + [7])
    print(f"{'student':<{width}}  {'points':>9}  {'%':>4}  {'seconds':>7}  notes", file=stream)
    for name, report, error in outcomes:
        if report is None:
            print(f"{_printable(name):<{width}}  {'-':>9}  {'-':>4}  {'-':>7}  {_printable(error, 120)}", file=stream)
            continue
        failing = [r.exercise.function for r in report.results if r.status != "pass"]
        notes = "all pass" if not failing else f"{len(failing)} not passing: {', '.join(failing[:4])}"
        notes += "..." if len(failing) > 4 else ""
        score = f"{report.points:.1f}/{report.total}"
        print(f"{_printable(name):<{width}}  {score:>9}  {report.percent:>4}  {report.seconds:>7.1f}  {notes}",
              file=stream)


def run_grade(paths, only=None, timeout=DEFAULT_TIMEOUT, import_timeout=DEFAULT_IMPORT_TIMEOUT,
              budget=DEFAULT_BUDGET, jobs=None, uncontained=False, memory_mb=Limits.memory_mb, use_torch=True,
              seed=None, csv_path=None, json_path=None, gradescope=None, report=False, stream=None):
    """`scratchnst exercises grade`: grade the class, print the table, write the exports.

    Returns the exit status: 0 when every submission was graded, 1 when one could not be (its row says why).
    """
    out = stream or sys.stdout
    for flag, value in (("--timeout", timeout), ("--import-timeout", import_timeout), ("--budget", budget)):
        if not value > 0:
            raise UsageError(f"{flag} must be a positive number of seconds, got {value:g}")
    submissions = find_submissions(paths)
    contained = check_containment(True, uncontained)
    if not contained:
        print("warning: running the submissions UNCONTAINED (--uncontained): their code can read and change "
              "whatever you can", file=sys.stderr)
    if gradescope and len(submissions) > 1 and Path(gradescope).suffix == ".json":
        raise UsageError("--gradescope FILE.json takes one submission; for several give a folder")
    started = time.monotonic()

    def progress(outcome):
        name, rep, error = outcome
        what = f"{rep.points:.1f}/{rep.total}" if rep else "not graded"
        print(f"graded {_printable(name)}: {what}", file=sys.stderr, flush=True)

    outcomes = grade_class(submissions, only=only, timeout=timeout, import_timeout=import_timeout, budget=budget,
                           jobs=jobs, contained=contained, limits=Limits(memory_mb=memory_mb),
                           use_torch=use_torch, seed=seed, progress=progress)
    if report:
        for name, rep, error in outcomes:
            print(f"=== {_printable(name)}", file=out)
            print_report(rep, out) if rep else print(error, file=out)
    print_table(outcomes, out)
    print(f"{len(outcomes)} submissions graded in {time.monotonic() - started:.1f} s "
          f"({'in bubblewrap' if contained else 'UNCONTAINED'})", file=out)
    if csv_path:
        _write(csv_path, as_csv(outcomes))
    if json_path:
        _write(json_path, json.dumps(as_json(outcomes), indent=1))
    if gradescope:
        if len(outcomes) == 1 and Path(gradescope).suffix == ".json":
            _write(gradescope, json.dumps(as_gradescope(outcomes[0][1], outcomes[0][2]), indent=1))
        else:
            Path(gradescope).mkdir(parents=True, exist_ok=True)
            for name, rep, error in outcomes:
                safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
                _write(Path(gradescope) / f"{safe}.json", json.dumps(as_gradescope(rep, error), indent=1))
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
# the only wall around the submission, which runs as a plain child process.
FLAG=""
if ! bwrap --ro-bind / / true 2>/dev/null; then FLAG="--uncontained"; fi
PYTHONPATH=/autograder/source/source python3 -m scratchnst exercises grade "$SUB" $FLAG \\
  --gradescope /autograder/results/results.json {options}
"""


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


__all__ = ["DEFAULT_BUDGET", "as_csv", "as_gradescope", "as_json", "find_submissions", "grade_class",
           "installed_package_dir", "run_grade", "write_gradescope_bundle"]
