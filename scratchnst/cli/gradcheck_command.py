"""`scratchnst gradcheck`: the table of gradient checks, on this package or on a student's copy.

With --package DIR the checks run on the functions of the student copy in DIR: in a child
Python whose `scratchnst` is the copy's (DIR first on its path), so that the copy's layers,
costs and networks are the ones checked, together, as the student's stylize would run them.
The copy's own gradcheck drives the table: `scratchnst exercises make` writes it from the same
source as this one. A row whose exercise is still a stub says NOT DONE and names it.

This is a student's tool for their own code, not the grader: the child runs with the student's
rights, uncontained (`scratchnst exercises grade` is the one for untrusted code).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from scratchnst.errors import UserError

# The child: put the copy first on the path, make sure its scratchnst is the one imported, run
# its gradcheck with the same options.
# A module of the copy that does not even import (a syntax error, a bad import) is the student's to
# fix: one line naming its file and line, not a traceback.
_CHILD = """
import importlib, sys, traceback
from pathlib import Path
root = sys.argv[1]
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
from scratchnst.cli import main
sys.exit(main(["gradcheck", *sys.argv[2:]]))
"""


def child_arguments(args):
    """The options of this run, for the copy's own gradcheck (everything but --package)."""
    argv = ["--seed", str(args.seed)]
    for name in args.only or ():
        argv += ["--only", name]
    if args.json:
        argv.append("--json")
    if args.no_torch:
        argv.append("--no-torch")
    return argv


def run_in_copy(args):
    """Run the table on the student copy in args.package; returns the child's exit status."""
    from scratchnst.exercises.grading import student_root

    root = student_root(args.package)
    if not args.json:
        print(f"checking the functions of the student copy in {root / 'scratchnst'}", flush=True)
    try:
        child = subprocess.run([sys.executable, "-c", _CHILD, str(root), *child_arguments(args)],
                               stdout=subprocess.PIPE if args.json else None, text=True,
                               env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    except OSError as error:
        raise UserError(f"cannot start Python to check {root}: {error}") from None
    if args.json:
        try:
            data = json.loads(child.stdout)
        except ValueError:
            sys.stdout.write(child.stdout)
            return child.returncode or 1
        print(json.dumps({"package": str(Path(root) / "scratchnst"), **data}, indent=1))
    return child.returncode


def run(args):
    """The `scratchnst gradcheck` command."""
    if args.package is not None:
        return run_in_copy(args)
    from scratchnst.gradcheck_cases import run_gradcheck

    return run_gradcheck(seed=args.seed, use_torch=not args.no_torch, only=args.only, as_json=args.json)
