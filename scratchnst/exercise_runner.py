"""The student's code, run in a child process: the worker and `StudentProcess`, its handle.

The grader starts this file as a script, with the student's folder first on sys.path, so that
`scratchnst` there is the student's package (see the docstring of `scratchnst.exercises`). That
is why nothing from scratchnst is imported here: in the worker, `import scratchnst` means the
student's package, and the grader's own modules are the installed ones.
"""

import importlib
import os
import pickle
import queue
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

_BLOCKED_IMPORTS = ("torch", "scipy", "tensorflow", "jax")


class _NoForeignImports:
    """Meta path finder that refuses the libraries the exercises must not lean on (see scratchnst.exercises)."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED_IMPORTS:
            raise ImportError(f"{name} cannot be imported while the exercises are graded: use NumPy")
        return None


def _plain(value, depth=0):
    """The value as plain Python and NumPy objects the grader can unpickle; other objects described."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return np.array(value)  # a plain copy: views, subclasses and memory maps become ndarrays
    if isinstance(value, np.generic) and not isinstance(value, np.object_):
        return value
    if isinstance(value, (tuple, list)) and depth < 4:
        items = [_plain(v, depth + 1) for v in value]
        return tuple(items) if isinstance(value, tuple) else items
    return {"unsupported": type(value).__name__}


def _arrays_in(args, kwargs):
    """(path, array) for every array in the arguments, inside tuples and lists too (caches)."""
    found = []

    def walk(value, path):
        if isinstance(value, np.ndarray):
            found.append((path, value))
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                walk(item, path + (i,))

    for i, arg in enumerate(args):
        walk(arg, (i,))
    for key, arg in kwargs.items():
        walk(arg, (key,))
    return found


def _where(error, root):
    """("scratchnst/layers.py:248 in conv2d_forward", "conv2d_forward"): the innermost student frame."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{os.path.relpath(error.filename, root)}:{error.lineno}", ""
    package = os.path.join(os.path.realpath(root), "scratchnst") + os.sep
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if os.path.realpath(f.filename).startswith(package)]
    if not (mine or frames):
        return "", ""
    frame = (mine or frames)[-1]
    return f"{os.path.relpath(frame.filename, root)}:{frame.lineno} in {frame.name}", frame.name


def _raised(error, root, importing=False):
    where, function = _where(error, root)
    message = " ".join(str(error).split())  # one line
    if isinstance(error, SystemExit):
        message = f"called sys.exit({error.code!r})"
    return {
        "status": "not done" if isinstance(error, NotImplementedError) and not importing else "error",
        "type": type(error).__name__,
        "message": message[:240],
        "where": where,
        "function": function,
    }


def _serve(root, module, function, args, kwargs):
    """Run one call of the student's code; the answer dict the grader reads (see StudentProcess.call)."""
    try:
        package = importlib.import_module("scratchnst")
        expected = os.path.realpath(os.path.join(root, "scratchnst"))
        if os.path.dirname(os.path.realpath(package.__file__)) != expected:
            raise ImportError(f"scratchnst was imported from {package.__file__}, not from {expected}")
        func = getattr(importlib.import_module(f"scratchnst.{module}"), function)
    except (Exception, SystemExit) as error:
        return _raised(error, root, importing=True)
    before = [(path, array, array.copy()) for path, array in _arrays_in(args, kwargs)]
    try:
        value = func(*args, **kwargs)
    except (Exception, SystemExit) as error:  # KeyboardInterrupt ends the worker, as it should
        return _raised(error, root)
    mutated = [path for path, array, copy in before
               if array.shape != copy.shape or array.tobytes() != copy.tobytes()]
    return {"status": "ok", "value": _plain(value), "mutated": mutated}


def _worker_main(root):
    """Serve (module, function, args, kwargs) requests from stdin, one pickled answer each on stdout."""
    sys.path[0] = root  # was this file's folder (the installed package); the student's comes first
    sys.meta_path.insert(0, _NoForeignImports)
    # The protocol gets private copies of stdin and stdout; the student's print() goes to stderr
    # and input() reads nothing, so neither can corrupt the requests or the answers.
    requests = os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), sys.stdin.fileno())
    pickle.dump({"status": "ready"}, answers)  # the grader starts the clock after this, not before
    answers.flush()
    while True:
        try:
            module, function, args, kwargs = pickle.load(requests)
        except EOFError:
            return
        answer = _serve(root, module, function, args, kwargs)
        try:
            data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # e.g. a result holding an unpicklable object in an ndarray
            data = pickle.dumps({"status": "error", "type": type(error).__name__, "where": "", "function": "",
                                 "message": f"the result cannot be sent to the grader: {error}"[:240]})
        answers.write(data)
        answers.flush()


class StudentProcess:
    """The student's package, imported in a child process; `call` runs one of its functions there.

    Args:
        root: the folder that holds the student's `scratchnst/` package.

    The child is started on the first call and again after it was stopped (timeout) or died.
    Use as a context manager so that the child never outlives the grader.
    """

    # Seconds a new child may take to start (Python and NumPy, on a loaded machine) before it says
    # it is ready. Start-up is not the student's code: it is not charged to the exercise's budget.
    START_TIMEOUT = 120

    def __init__(self, root):
        self.root = str(Path(root).resolve())
        self._proc = self._answers = self._stderr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _start(self):
        """Start the child; True once it says it is ready, False if it died or hung on the way."""
        self._stderr = tempfile.TemporaryFile()  # a file, not a pipe: a chatty student cannot block
        self._proc = subprocess.Popen(
            [sys.executable, "-B", str(Path(__file__).resolve()), "--worker", self.root],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=self.root,
        )
        # A thread reads the answers so that waiting for one can time out on every platform.
        self._answers = queue.Queue()
        threading.Thread(target=self._read, args=(self._proc.stdout, self._answers), daemon=True).start()
        try:
            ready = self._answers.get(timeout=self.START_TIMEOUT)
        except queue.Empty:
            ready = None
        return ready == {"status": "ready"}

    @staticmethod
    def _read(stream, answers):
        while True:
            try:
                answers.put(pickle.load(stream))
            except Exception:  # EOF (the child ended) or garbage: either way no more answers
                answers.put(None)
                return

    def stop(self):
        """Kill the child (if running) and release its pipes."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait()
            for stream in (self._proc.stdin, self._proc.stdout, self._stderr):
                try:
                    stream.close()
                except OSError:
                    pass
        self._proc = self._answers = self._stderr = None

    def _stderr_tail(self):
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1][:200] if lines else ""

    def call(self, module, function, args, kwargs, budget):
        """Run scratchnst.<module>.<function>(*args, **kwargs) in the child.

        Args:
            budget: seconds to wait for the answer before the child is killed.

        Returns:
            (answer, seconds). answer is a dict with "status":
                "ok"        "value" (the result, see `_plain`), "mutated" (paths of inputs written into)
                "not done"  NotImplementedError: "type", "message", "where", "function"
                "error"     any other exception: the same keys
                "timeout"   no answer within the budget; the child was killed
                "crashed"   the child died: "code" (its exit status), "message" (stderr's last line)
        """
        if self._proc is None and not self._start():
            code = self._proc.poll()
            message = self._stderr_tail() or f"the worker did not start within {self.START_TIMEOUT} s"
            self.stop()
            return {"status": "crashed", "code": code, "message": message}, 0.0
        start = time.monotonic()
        try:
            pickle.dump((module, function, args, kwargs), self._proc.stdin, protocol=pickle.HIGHEST_PROTOCOL)
            self._proc.stdin.flush()
            answer = self._answers.get(timeout=max(budget, 0.01))
        except queue.Empty:
            self.stop()
            return {"status": "timeout"}, time.monotonic() - start
        except OSError:  # the pipe broke: the child is gone
            answer = None
        if answer is None:
            code = self._proc.wait()
            message = self._stderr_tail()
            self.stop()
            return {"status": "crashed", "code": code, "message": message}, time.monotonic() - start
        return answer, time.monotonic() - start


if __name__ == "__main__":  # the grader starts this file as its worker process: see StudentProcess
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker_main(sys.argv[2])
    else:
        sys.exit("this file is started by `scratchnst exercises check`; it is not a command of its own")
