"""Build executed notebooks, and an HTML page of each, from the lessons' `# %%` scripts.

    pip install -e ".[lessons]"                         # jupytext, nbclient, ipykernel, nbconvert, matplotlib
    python lessons/build_notebooks.py                   # all twelve: ~5 min for 01-10, ~3 more for 11, 12
    python lessons/build_notebooks.py 04 07             # only lessons 04 and 07
    python lessons/build_notebooks.py --lesson-args "--size 64 --iters 3"   # quick and small

Writes lessons/notebooks/NN_name.ipynb (outputs and pictures embedded) and NN_name.html (one
self-contained page: a browser is all a reader needs). Both are generated, never edited and
never committed: the scripts are the source. The pictures also go to lessons/out/, as from the
command line (or to the folder `--lesson-args "--out DIR"` names).

The ecosystem's own tools do the work: jupytext reads the `# %%` script into a notebook,
nbclient runs it in an ipykernel kernel whose working folder is lessons/ (so `import _lesson`
works, as it does for a script), nbconvert writes the HTML. The kernel sees this repository's
`scratchnst` first (its PYTHONPATH starts with the repository's root), whatever is installed.
A lesson's options reach it through $SCRATCHNST_LESSON_ARGS (see _lesson.parse_args); relative
paths in them are taken from lessons/, the kernel's working folder.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

LESSONS = Path(__file__).resolve().parent
REPO = LESSONS.parent
DEFAULT_DEST = LESSONS / "notebooks"  # git-ignored
NEEDED = {"jupytext": "jupytext", "nbclient": "nbclient", "nbconvert": "nbconvert", "ipykernel": "ipykernel",
          "nbformat": "nbformat"}


def lesson_scripts(selectors=()):
    """The lesson scripts, in order; `selectors` keeps those whose name starts with one of them ("04")."""
    scripts = sorted(LESSONS.glob("[0-9][0-9]_*.py"))
    if selectors:
        scripts = [s for s in scripts if any(s.name.startswith(sel) for sel in selectors)]
    return scripts


def missing_tools():
    """The packages this script needs that are not installed (by their pip name)."""
    import importlib.util

    return [pip for module, pip in NEEDED.items() if importlib.util.find_spec(module) is None]


def kernel_env(lesson_args=""):
    """The environment of the kernel: this repository's scratchnst first, the lesson's options."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["SCRATCHNST_LESSON_ARGS"] = lesson_args
    env.pop("MPLBACKEND", None)  # the kernel's own inline backend; the lessons show their PNGs themselves
    return env


# The notebook's first code cell. Jupyter starts a notebook's kernel in the notebook's own folder
# (lessons/notebooks/ for a built one, anywhere after a copy), a script runs beside _lesson.py.
FIND_HELPER = """# where `import _lesson` finds the lessons' helper: here, the folder above, or where this was built
import sys
from pathlib import Path
for folder in (Path.cwd(), Path.cwd().parent, Path({lessons!r})):
    if (folder / "_lesson.py").is_file():
        sys.path.insert(0, str(folder))
        break"""


# Under the title: the lessons' text says "run with --iters 300"; in a notebook there is no command line.
OPTIONS_NOTE = """
In a notebook, the options this text mentions (`--iters 300`, `--content PATH`, ...) come from the
environment variable `SCRATCHNST_LESSON_ARGS`, set before Jupyter starts (`SCRATCHNST_LESSON_ARGS="--iters 300"
jupyter lab`) or given to `python lessons/build_notebooks.py NN --lesson-args "--iters 300"`; relative paths in
them are read from the notebook's own folder, so give absolute ones.
"""


def to_notebook(script):
    """The `# %%` script as an (unexecuted) notebook, read by jupytext; the kernel is this Python's.

    The script's docstring (its title, how to run it, what it makes) becomes the notebook's first,
    markdown, cell: as code it would only echo itself as a string. The next, FIND_HELPER, lets the
    notebook run again from the folder it was saved in.
    """
    import ast

    import jupytext
    from nbformat.v4 import new_code_cell, new_markdown_cell

    nb = jupytext.read(script, fmt="py:percent")
    first = nb.cells[0] if nb.cells else None
    if first is not None and first.cell_type == "code":
        body = ast.parse(first.source).body
        if len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            title, _, rest = body[0].value.value.strip().partition("\n")
            rest = "\n".join("    " + line if line.strip() else "" for line in rest.strip("\n").splitlines())
            nb.cells[0] = new_markdown_cell(f"# {title}\n\n{rest}".rstrip() + "\n" + OPTIONS_NOTE)
    nb.cells.insert(1, new_code_cell(FIND_HELPER.format(lessons=str(LESSONS))))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata.pop("jupytext", None)  # a generated notebook, not one paired with the script
    return nb


def execute(script, lesson_args="", timeout=900):
    """Run one lesson as a notebook; returns the executed notebook (nbformat.NotebookNode).

    Raises nbclient's CellExecutionError (with the cell and its traceback) if a cell fails, and its
    CellTimeoutError if one runs past `timeout` seconds.
    """
    # the asynchronous manager: with the blocking one, nbclient never stops a cell at `timeout`
    from jupyter_client import AsyncKernelManager as KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    from nbclient.util import run_sync

    nb = to_notebook(script)
    # The kernel talks over Unix sockets in a private folder, not TCP on localhost: no port for
    # another user to reach, and no warning from the kernel about unencrypted TCP at every lesson
    # (Windows has no such sockets: TCP there).
    with tempfile.TemporaryDirectory(prefix="scratchnst-kernel-") as sockets:
        km = (KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
              if os.name == "posix" else KernelManager(kernel_name="python3"))
        client = NotebookClient(nb, km=km, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(LESSONS)}})
        try:
            client.execute(env=kernel_env(lesson_args), cwd=str(LESSONS))
        except CellExecutionError as error:
            # what the lesson wrote to stderr: a wrong option's one line is there, not in the exception
            error.stderr = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                                   for out in cell.get("outputs", []) if out.get("name") == "stderr")
            raise
        finally:
            if km.has_kernel:   # a kernel manager given to the client is ours to shut down
                run_sync(km.shutdown_kernel)(now=True)
    return nb


def failure_line(error):
    """One line for a lesson that failed as a notebook: its own message (a wrong option, a missing
    file), not the kernel's traceback around it."""
    said = [line.strip() for line in getattr(error, "stderr", "").splitlines() if ": error: " in line]
    if error.ename == "SystemExit" and said:
        return said[-1]
    return f"{error.ename}: {error.evalue}".strip()


def write_html(nb, path):
    """Write one self-contained HTML page of an executed notebook (pictures embedded as data)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")


def _joined_lesson_args(argv):
    """argv with `--lesson-args VALUE` as `--lesson-args=VALUE`: argparse takes a lone value that starts
    with a dash ("--size=64") for an option of its own, and stops with "expected one argument"."""
    joined, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--lesson-args" and rest and rest[0].startswith("-"):
            arg = f"--lesson-args={rest.pop(0)}"
        joined.append(arg)
    return joined


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("lessons", nargs="*", help="lesson numbers or name prefixes (default: all twelve)")
    parser.add_argument("--dest", type=Path, default=DEFAULT_DEST, help="folder for the .ipynb and .html files")
    parser.add_argument("--lesson-args", default="", help='options for every lesson, e.g. "--size 64 --iters 3"')
    parser.add_argument("--no-html", action="store_true", help="write the notebooks only")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may run")
    args = parser.parse_args(_joined_lesson_args(sys.argv[1:] if argv is None else argv))
    missing = missing_tools()
    if missing:
        sys.exit(f"build_notebooks: needs {', '.join(missing)}: pip install -e \".[lessons]\" "
                 f"(or pip install {' '.join(missing)})")
    scripts = lesson_scripts(args.lessons)
    if not scripts:
        sys.exit(f"build_notebooks: no lesson matches {' '.join(args.lessons)}")
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError

    if args.timeout < 1:
        sys.exit(f"build_notebooks: --timeout must be at least 1 second, got {args.timeout}")
    try:
        args.dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        sys.exit(f"build_notebooks: --dest {args.dest}: cannot make that folder ({error.strerror}); give a folder "
                 "you can write to")
    for script in scripts:
        start = time.perf_counter()
        print(f"{script.name}: running ...", flush=True)
        try:
            nb = execute(script, args.lesson_args, args.timeout)
        except CellTimeoutError:
            sys.exit(f"build_notebooks: {script.name} failed: a cell ran past --timeout {args.timeout} s (stopped); "
                     "give a larger --timeout, or quicker --lesson-args")
        except CellExecutionError as error:
            sys.exit(f"build_notebooks: {script.name} failed: {failure_line(error)}"
                     + (f"\n{error}" if os.environ.get("SCRATCHNST_DEBUG") else ""))
        target = args.dest / f"{script.stem}.ipynb"
        written = [target] + ([] if args.no_html else [target.with_suffix(".html")])
        try:
            nbformat.write(nb, target)
            if not args.no_html:
                write_html(nb, target.with_suffix(".html"))
        except OSError as error:
            sys.exit(f"build_notebooks: cannot write {error.filename or target} ({error.strerror}); give a --dest "
                     "you can write to")
        pictures = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
        print(f"{script.name}: {pictures} pictures, {time.perf_counter() - start:.0f} s -> "
              + ", ".join(str(p) for p in written), flush=True)


if __name__ == "__main__":
    main()
