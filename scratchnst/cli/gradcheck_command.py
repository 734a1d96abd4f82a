"""`scratchnst gradcheck`: the table of gradient checks, on this package or on a student's copy.

The table's first line names the package checked: `scratchnst gradcheck` (the console script)
checks the installed package, `python -m scratchnst gradcheck` the one in the current folder, and
inside a student copy the two differ. A note says so when the current folder holds another one.

With --package DIR the checks run on the functions of the student copy in DIR: in a child
Python whose `scratchnst` is the copy's (DIR first on its path), so that the copy's layers,
costs and networks are the ones checked, together, as the student's stylize would run them.
The copy's own gradcheck runs the rows (`scratchnst exercises make` writes it from the same
source as this one) and sends each to this process as a line of JSON; this process prints the
table. A row still running after --timeout seconds (an endless loop) is stopped where it is:
faulthandler's own thread writes the child's traceback and ends it, which works in a loop that
swallows exceptions or inside compiled code too, and this process names the student's function
from that traceback, then starts a new child for the rows after it. Every child builds the rows
from the same seed, so the rows after a restart are the ones they would have been.

This is a student's tool for their own code, not the grader: the child runs with the student's
rights, uncontained (`scratchnst exercises grade` is the one for untrusted code).
"""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from scratchnst.errors import UsageError, UserError, debug_requested

# The child: Ctrl-C is the parent's to report (it then ends the child); the rows go to the parent on
# the stdout it was given, and what the student's code prints goes to stderr instead, so that it
# cannot break the rows. The copy goes first on the path, and its scratchnst must be the one imported.
# A module of the copy that does not even import (a syntax error, a bad import) is the student's to
# fix: one line naming its file and line, not a traceback. An import that never ends is stopped as a
# row is (see the module docstring).
_CHILD = """
import faulthandler, importlib, json, os, signal, sys, traceback
from pathlib import Path
signal.signal(signal.SIGINT, signal.SIG_IGN)
rows_out = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
root, request = sys.argv[1], json.loads(sys.argv[2])
trace = open(request["trace"], "w")
faulthandler.dump_traceback_later(request["timeout"], exit=True, file=trace)
sys.path.insert(0, root)
for name in ("scratchnst", "scratchnst.layers", "scratchnst.costs", "scratchnst.optim"):
    try:
        module = importlib.import_module(name)
    except (Exception, SystemExit) as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(root)]
        if isinstance(error, SyntaxError) and error.filename:
            where = f"{error.filename}:{error.lineno}"
        else:
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else name
        text = " ".join(str(error).split())[:200]
        print(f"scratchnst: error: the student copy does not import: {where}: {type(error).__name__}"
              f"{': ' + text if text else ''}; fix it, then check again", file=sys.stderr)
        sys.exit(1)
    if name == "scratchnst" and Path(module.__file__).resolve().parent != Path(root, "scratchnst").resolve():
        print(f"scratchnst: error: {root}/scratchnst could not be imported ahead of {module.__file__}",
              file=sys.stderr)
        sys.exit(1)
    # A module missing from the copy is found elsewhere (an editable install's finder supplies the whole
    # package's): its answers would be checked as the student's
    if name != "scratchnst" and Path(module.__file__).parent.resolve() != Path(root, "scratchnst").resolve():
        print(f"scratchnst: error: the student copy has no {name.replace('.', '/')}.py (Python found "
              f"{module.__file__} instead); put the file back, or make a new copy with `scratchnst exercises "
              "make` and move your answers into it", file=sys.stderr)
        sys.exit(1)
faulthandler.cancel_dump_traceback_later()
try:
    from scratchnst.cli.gradcheck_command import serve_rows
except ImportError:
    print(f"scratchnst: error: the student copy in {root} was made by an older scratchnst, whose gradcheck "
          "cannot be driven from this one; run `python -m scratchnst gradcheck` inside it", file=sys.stderr)
    sys.exit(1)
sys.exit(serve_rows(rows_out, request, trace))
"""


def serve_rows(out, request, trace):
    """In a student copy's child Python: run its rows from request["first"] on, each under request["timeout"].

    Sends to `out`, one JSON object a line: {"count", "pytorch"} first, then for each row {"start"
    (its index), "name", "group"}, {"config"} once its case is built (the configuration a row stopped
    in the middle is shown with), and {"row": Row.as_dict()} or {"skipped", "reason"}, and {"done"}
    at the end; {"usage_error"} instead for an --only that names nothing. `trace` is the open file
    where faulthandler writes the traceback of a row it stops (or of a crash).
    """
    import faulthandler

    from scratchnst import gradcheck, gradcheck_cases, torch_ref

    def send(**message):
        out.write(json.dumps(message) + "\n")
        out.flush()  # faulthandler ends this Python without flushing anything

    try:
        checks = gradcheck_cases.checks_to_run(request["seed"], only=request["only"])
    except UsageError as error:
        send(usage_error=str(error))
        return 2
    have_torch = request["use_torch"] and torch_ref.available()
    send(count=len(checks), pytorch=None if have_torch else ("not installed" if request["use_torch"] else "skipped"))
    faulthandler.enable(trace)  # a crash (NumPy handed nonsense) leaves its traceback too
    for i in range(request["first"], len(checks)):
        check = checks[i]
        send(start=i, name=check.name, group=check.group)
        faulthandler.dump_traceback_later(request["timeout"], exit=True, file=trace)
        try:
            row = gradcheck.run_check(check, have_torch, request["seed"],
                                      on_built=lambda case: send(config=case.config))
        except gradcheck.Skip as why:
            send(skipped=check.name, reason=str(why))
            continue
        finally:
            faulthandler.cancel_dump_traceback_later()
        send(row=row.as_dict())
    send(done=True)
    return 0


class _Received:
    """What the child Pythons of one --package run have sent: the rows, the skipped checks, the row running."""

    def __init__(self, count, progress):
        self.rows, self.skipped, self.torch_note, self.running, self.finished = [], [], None, None, False
        self.count, self.progress = count, progress  # count: this package's, until a child says its own

    def take(self, message):
        """Note one message of a child (see serve_rows); a usage_error is the caller's to raise."""
        from scratchnst.gradcheck import Row

        if "count" in message:
            self.count, self.torch_note = message["count"], message["pytorch"]
        elif "start" in message:
            self.running = {**message, "since": time.perf_counter()}
            self.progress.show(message["start"], self.count, message["name"])
        elif "config" in message:
            if self.running is not None and isinstance(message["config"], str):
                self.running["config"] = message["config"]
        elif "row" in message:
            self.rows.append(Row.from_dict(message["row"]))
            self.running = None
        elif "skipped" in message:
            self.skipped.append((message["skipped"], message["reason"]))
            self.running = None
        elif "done" in message:
            self.finished = True


def run_in_copy(args, checks):
    """Run the table on the student copy in args.package; returns the exit status.

    checks: this package's rows for args.only, to say which row of how many runs.
    """
    from scratchnst import gradcheck
    from scratchnst.exercises.grading import student_root
    from scratchnst.gradcheck_cases import print_results

    root = student_root(args.package)
    package = root / "scratchnst"
    about = _about(args, package, f"the student copy in {package}")
    progress = _Progress()
    got = _Received(len(checks), progress)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scratchnst-gradcheck-") as scratch:
        trace = Path(scratch, "trace.txt")
        try:
            first = 0
            while True:
                child = _start_child(root, {"seed": args.seed, "only": args.only, "use_torch": not args.no_torch,
                                            "timeout": args.timeout, "first": first, "trace": str(trace)})
                try:
                    for message in _messages(child.stdout):
                        if "usage_error" in message:
                            raise UsageError(message["usage_error"])
                        got.take(message)
                    child.wait()  # the end of its rows: it has ended, or is about to
                finally:
                    if child.poll() is None:  # a Ctrl-C, or a wrong --only: this one is not needed any more
                        child.kill()
                        child.wait()
                        # what it sent before it was stopped: the row it was in, for the Ctrl-C line
                        for message in _messages(child.stdout):
                            got.take(message)
                    child.stdout.close()
                if got.finished:
                    break
                text = trace.read_text(encoding="utf-8", errors="replace") if trace.exists() else ""
                if got.running is None:  # it ended before a row: the copy does not import (it said so on stderr)
                    progress.clear()
                    if text.startswith("Timeout"):
                        raise UserError(f"importing the student copy in {root} was still running after "
                                        f"{args.timeout:g} s, in {_stopped_in(text, package)}: an endless loop? "
                                        "(stopped; --timeout sets the limit)")
                    return child.returncode or 1
                got.rows.append(_stopped_row(got.running, text, package, args.timeout, child.returncode))
                first, got.running = got.running["start"] + 1, None  # a new child for the rows after it
        except KeyboardInterrupt as stop:
            progress.clear()
            running = got.running and (got.running["start"], got.running["name"])
            return _interrupted(args, stop, running, got.count)
    progress.clear()
    print_results(got.rows, got.skipped, got.torch_note, time.perf_counter() - start, args.json, about=about)
    return gradcheck.exit_status(got.rows)


def _start_child(root, request):
    try:
        return subprocess.Popen([sys.executable, "-c", _CHILD, str(root), json.dumps(request)],
                                stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except OSError as error:
        raise UserError(f"cannot start Python to check {root}: {error}") from None


def _messages(stream):
    """The child's JSON lines; anything else that reached the stream (a student writing to it) is dropped."""
    for line in stream:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            yield message


# a line of a faulthandler traceback, most recent call first
_FRAME = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+) in (?P<function>\S+)', re.MULTILINE)


def _stopped_in(trace_text, package):
    """'scratchnst.costs.gram_matrix (scratchnst/costs.py:141)': the innermost frame of the copy's own code
    (not the checker's) in a faulthandler traceback; 'its code' when there is none."""
    return _stopped_frame(trace_text, package)[0]


def _stopped_frame(trace_text, package):
    """(_stopped_in's text, the source line it names or "")."""
    import linecache

    from scratchnst.gradcheck import in_checked_code, place

    for frame in _FRAME.finditer(trace_text):
        if in_checked_code(frame["file"], package):
            module = ".".join(Path(frame["file"]).resolve().relative_to(package.parent).with_suffix("").parts)
            line = linecache.getline(frame["file"], int(frame["line"])).strip()
            return f"{module}.{frame['function']} ({place(frame['file'], frame['line'], package)})", line
    return "its code", ""


def _stopped_row(running, trace_text, package, timeout, returncode):
    """The Row of a row whose child Python ended inside it: stopped at the time limit, or crashed."""
    from scratchnst.gradcheck import Row

    where, line = _stopped_frame(trace_text, package)
    row = Row(running["name"], running["group"], running.get("config", ""),
              seconds=time.perf_counter() - running["since"])
    if trace_text.startswith("Timeout"):
        row.result = "TIMEOUT"
        # a check calls the function hundreds of times: a print in it can fill the time on its own
        why = ("printing, which is slow at hundreds of calls: print less, or an endless loop?"
               if re.search(r"\bprint\s*\(", line) else "an endless loop?")
        row.detail = f"{where} was still running after {timeout:g} s: {why} (stopped; --timeout sets the limit)"
    else:
        fatal = next((line for line in trace_text.splitlines() if line.startswith("Fatal Python error")), "")
        how = fatal.split(":", 1)[-1].strip() if fatal else f"exit status {returncode}"
        row.result, row.detail = "ERROR", f"the check's Python ended in {where} ({how})"
    return row


def _about(args, package, what):
    """Print the header naming the package checked (and the note on another one here); returns --json's keys.

    The note is for a run without --package, which checks whichever package Python imported: with
    --package the user said which one.
    """
    note = _other_package_note(package) if args.package is None else None
    about = {"package": str(package), **({"note": note} if note else {})}
    if not args.json:
        limit = f"; a row still running after {args.timeout:g} s is stopped" if args.package is not None else ""
        print(f"checking the functions of {what}{limit}", flush=True)
        if note:
            print(f"note: {note}", flush=True)
    return about


def _other_package_note(package):
    """The note for a current folder holding a scratchnst package other than the one checked, else None."""
    here = Path.cwd() / "scratchnst"
    try:
        other = (here / "__init__.py").is_file() and here.resolve() != Path(package).resolve()
    except OSError:  # a current folder that cannot be read holds nothing we could check
        return None
    if not other:
        return None
    return (f"the current folder holds another scratchnst package, {here} (a student copy?); "
            "to check that one: scratchnst gradcheck --package .")


class _Progress:
    """'checking gram_matrix (2 of 7)' on stderr while a row runs, when stderr is a terminal; cleared after."""

    def __init__(self):
        self.on = sys.stderr.isatty()

    def show(self, i, count, name):
        if self.on:
            sys.stderr.write(f"\r\033[Kchecking {name} ({i + 1} of {count})")
            sys.stderr.flush()

    def clear(self):
        if self.on:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _where_it_failed(error):
    """'file:line: Type: message' of an import that failed: a SyntaxError's own line, else the innermost line of
    the package's files (of a student copy, run from inside it)."""
    package = Path(__file__).resolve().parents[1]
    if isinstance(error, SyntaxError) and error.filename:
        where = f"{error.filename}:{error.lineno}"
    else:
        frames = [f for f in traceback.extract_tb(error.__traceback__)
                  if Path(f.filename).resolve().is_relative_to(package)]
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "scratchnst"
    text = " ".join(str(error).split())[:200]
    return f"{where}: {type(error).__name__}{': ' + text if text else ''}"


def _interrupted(args, stop, running, count):
    """One line for a Ctrl-C (or SIGTERM): which row it stopped; returns the exit status, 130 for Ctrl-C."""
    from scratchnst.cli import interrupts

    if getattr(args, "debug", False) or debug_requested():
        raise stop
    where = f" while checking {running[1]} (row {running[0] + 1} of {count})" if running else ""
    with interrupts.ignoring_stops():  # a second Ctrl-C must not cut this line short
        print(f"scratchnst: interrupted ({getattr(stop, 'how', 'Ctrl-C')}){where}; no table was printed",
              file=sys.stderr)
    return getattr(stop, "exit_status", interrupts.INTERRUPTED)


def run(args):
    """The `scratchnst gradcheck` command."""
    try:
        from scratchnst import gradcheck_cases
    except (Exception, SystemExit) as error:  # run inside a student copy: the student's slip in its modules
        raise UserError(f"scratchnst does not import: {_where_it_failed(error)}; fix it, then check again") from error

    checks = gradcheck_cases.checks_to_run(args.seed, only=args.only)  # a wrong --only: one line, before anything
    if args.package is not None:
        return run_in_copy(args, checks)
    package = Path(gradcheck_cases.__file__).resolve().parent
    about = _about(args, package, f"the package in {package}")
    progress, running = _Progress(), None

    def on_start(i, check):
        nonlocal running
        if check is None:  # all done: the table follows
            running = None
            progress.clear()
        else:
            running = (i, check.name)
            progress.show(i, len(checks), check.name)

    try:
        return gradcheck_cases.run_gradcheck(seed=args.seed, use_torch=not args.no_torch, cases=checks,
                                             as_json=args.json, on_start=on_start, about=about)
    except KeyboardInterrupt as stop:
        progress.clear()
        return _interrupted(args, stop, running, len(checks))
