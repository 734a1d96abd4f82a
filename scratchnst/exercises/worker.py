"""The child process that runs a student's code, and the plain-data format it talks in.

The grader starts this file as a script (see sandbox.py): `python -I -S -B worker.py ROOT LIB`,
ROOT being the folder that holds the student's `scratchnst/` and LIB the folder that holds NumPy.
Nothing from scratchnst is imported here: in this process `import scratchnst` means the student's
package. The file needs the standard library and NumPy only, so the grader can run it inside a
sandbox that holds nothing else.

The format (both ways, one frame per message; never pickle, never anything that runs code):

    b"SNX1", the header's length (4 bytes, big-endian), the header (UTF-8 JSON),
    then the bytes of each array the header lists, C order, little-endian.

    header = {"head": {control fields}, "body": value, "arrays": [{"dtype": "float64", "shape": [2, 3]}, ...]}

A value is JSON null, true/false, a number or a string, or one of the tagged objects
{"t": [...]} (tuple), {"l": [...]} (list), {"d": [[key, value], ...]} (dict with string keys),
{"a": i} (the i-th array), {"s": i} (a NumPy scalar, stored as the i-th array, 0-d), or
{"u": "type name"} (an object the child could not send, described). `read_frame` parses a frame
under `Limits`: the dtypes of ALLOWED_DTYPES only, sizes bounded, a deadline on the whole read. A
frame that breaks a rule is a `ProtocolError`: the grader then trusts nothing more from that child.
"""

import errno
import importlib
import importlib.machinery
import io
import json
import os
import select
import struct
import sys
import time
import traceback
from dataclasses import dataclass

if __name__ == "__main__" and len(sys.argv) == 4:
    sys.path.insert(0, sys.argv[3])  # NumPy's folder: `python -I -S` sees the standard library only
import numpy as np  # noqa: E402

MAGIC = b"SNX1"
ALLOWED_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8",
                  "uint64", "uint32", "uint16", "uint8", "bool")
# What a student's code may import, the one list the self-check and grading share: the standard
# library, NumPy and the package itself. The sandbox's view holds nothing more (sandbox._bwrap_command);
# the uncontained child (a self-check, --uncontained) sees the whole site-packages, so the import hook
# below refuses the rest there too, with the same message: 100% at home is 100% when graded.
IMPORTABLE = ("numpy", "scratchnst")
# What the calls of one exercise may print together (MB; the grader says at each call how much the
# exercise printed before). The same bound as the child's files (sandbox.Limits.file_mb): beyond it a
# call fails with one clear message, in the self-check as when graded, and the other exercises start afresh.
OUTPUT_MB = 8
# What is kept of a call's print() output to show the student (the self-check shows it): the start
# only; the self-check shows SHOWN_LINES lines per exercise, each cut to SHOWN_LINE_CHARS
SHOWN_CHARS = 2000
SHOWN_LINES = 20
SHOWN_LINE_CHARS = 200


# ============================================================================== the format
class ProtocolError(Exception):
    """A frame that is not what the format allows (or did not arrive in time)."""


@dataclass(frozen=True)
class Limits:
    """What one frame may hold; the grader reads the student's frames under these."""

    header_bytes: int = 1 << 20
    array_bytes: int = 64 << 20  # all arrays of one frame together
    arrays: int = 4096
    depth: int = 12
    string: int = 4000


def pack(value, arrays, depth=0):
    """The JSON-able form of value; its arrays are appended to `arrays`. Unknown objects become {"u": name}.

    Only exact built-in types are trusted: a subclass of float or tuple is described, not converted,
    so that none of its code runs here on the grader's behalf.
    """
    kind = type(value)
    if value is None or kind in (bool, int, str):
        return value
    if kind is float:
        return value if value == value and abs(value) != float("inf") else {"f": repr(value)}
    if isinstance(value, np.ndarray) or (isinstance(value, np.generic) and kind.__module__ == "numpy"):
        # (in the child: an ndarray subclass, a view or a memory map is sent as a plain array copy)
        array = np.array(value, subok=False)
        if array.dtype.name not in ALLOWED_DTYPES:
            return {"u": f"{kind.__name__} of dtype {array.dtype.name}"}
        arrays.append(np.array(array, dtype=array.dtype.newbyteorder("<"), order="C"))  # 0-d stays 0-d
        return {"a" if isinstance(value, np.ndarray) else "s": len(arrays) - 1}
    if kind in (tuple, list) and depth < 8:
        return {"t" if kind is tuple else "l": [pack(v, arrays, depth + 1) for v in value]}
    if kind is dict and depth < 8 and all(type(k) is str for k in value):
        return {"d": [[k, pack(v, arrays, depth + 1)] for k, v in value.items()]}
    return {"u": kind.__name__ if isinstance(kind.__name__, str) else "object"}


def unpack(obj, arrays, limits=Limits(), depth=0):
    """The value `pack` encoded (arrays: the frame's arrays). ProtocolError for anything else."""
    if depth > limits.depth:
        raise ProtocolError("nested too deeply")
    if obj is None or type(obj) in (bool, int, float):
        return obj
    if type(obj) is str:
        if len(obj) > limits.string:
            raise ProtocolError("a string too long")
        return obj
    if type(obj) is not dict or len(obj) != 1:
        raise ProtocolError("a value of unknown form")
    ((tag, inner),) = obj.items()
    if tag in ("t", "l") and type(inner) is list:
        items = [unpack(v, arrays, limits, depth + 1) for v in inner]
        return tuple(items) if tag == "t" else items
    if tag == "d" and type(inner) is list:
        out = {}
        for pair in inner:
            if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
                raise ProtocolError("a malformed dict")
            out[pair[0]] = unpack(pair[1], arrays, limits, depth + 1)
        return out
    if tag in ("a", "s") and type(inner) is int and 0 <= inner < len(arrays):
        array = arrays[inner]
        if tag == "s":
            if array.ndim != 0:
                raise ProtocolError("a scalar that is not 0-d")
            return array[()]
        return array
    if tag == "f" and inner in ("nan", "inf", "-inf"):
        return float(inner)
    if tag == "u" and type(inner) is str:
        return {"unsupported": inner[:80]}
    raise ProtocolError("a value of unknown form")


def encode_frame(head, body=None):
    """The bytes of one frame: head (a JSON-able dict) and body (any value `pack` takes)."""
    arrays = []
    packed = pack(body, arrays)
    header = json.dumps({"head": head, "body": packed,
                         "arrays": [{"dtype": a.dtype.name, "shape": list(a.shape)} for a in arrays]},
                        allow_nan=False).encode()
    return b"".join([MAGIC, struct.pack(">I", len(header)), header] + [a.tobytes() for a in arrays])


def _read_exact(fd, n, deadline):
    """n bytes from fd, waiting at most until `deadline` (time.monotonic); ProtocolError on EOF or time up."""
    chunks, got = [], 0
    while got < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        ready, _, _ = select.select([fd], [], [], None if left == float("inf") else left)
        if not ready:
            continue
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd, deadline, limits=Limits()):
    """(head, body) of the next frame on fd.

    Raises TimeoutError when the deadline passes, EOFError when the writer is gone, and
    ProtocolError for a frame that breaks the format or the limits.
    """
    start = _read_exact(fd, 8, deadline)
    if start[:4] != MAGIC:
        raise ProtocolError("bytes that are not a frame")
    (size,) = struct.unpack(">I", start[4:])
    if size > limits.header_bytes:
        raise ProtocolError(f"a header of {size} bytes")
    try:
        header = json.loads(_read_exact(fd, size, deadline).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise ProtocolError(f"a header that is not JSON ({type(error).__name__})") from None
    if type(header) is not dict or set(header) != {"head", "body", "arrays"} or type(header["head"]) is not dict \
            or type(header["arrays"]) is not list or len(header["arrays"]) > limits.arrays:
        raise ProtocolError("a header of unknown form")
    specs, total = [], 0
    for spec in header["arrays"]:
        if type(spec) is not dict or set(spec) != {"dtype", "shape"} or spec["dtype"] not in ALLOWED_DTYPES \
                or type(spec["shape"]) is not list or len(spec["shape"]) > 8 \
                or not all(type(d) is int and 0 <= d <= limits.array_bytes for d in spec["shape"]):
            raise ProtocolError("an array of a dtype or shape not allowed")
        dtype = np.dtype(spec["dtype"]).newbyteorder("<")
        count, span = 1, 1
        for d in spec["shape"]:
            count *= d
            span *= max(d, 1)
        # NumPy refuses a shape whose nonzero sides multiply past its index range, even with a side
        # of 0 (no bytes): (0, 2**26, 2**26, 2**26) would pass the byte count and fail the reshape
        if span > limits.array_bytes:
            raise ProtocolError("an array of a dtype or shape not allowed")
        total += count * dtype.itemsize
        if total > limits.array_bytes:
            raise ProtocolError(f"arrays of more than {limits.array_bytes >> 20} MB")
        specs.append((dtype, tuple(spec["shape"]), count * dtype.itemsize))
    arrays = []
    for dtype, shape, nbytes in specs:
        data = _read_exact(fd, nbytes, deadline)
        # a writable native copy: the grader computes with it
        arrays.append(np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("=")))
    try:
        return header["head"], unpack(header["body"], arrays, limits)
    except RecursionError:
        raise ProtocolError("nested too deeply") from None


# ============================================================================ the worker
def importable(name, stdlib_path):
    """True if a student's code may import module `name` (dotted): see IMPORTABLE.

    The standard library is what Python's own folders hold (stdlib_path: sys.path as `python -I -S`
    starts), private modules included (sysconfig's `_sysconfigdata_*`, which NumPy's testing reads),
    and never site-packages, which only the uncontained child has on its path.
    """
    top = name.partition(".")[0]
    if top in IMPORTABLE or top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return True
    return importlib.machinery.PathFinder.find_spec(top, list(stdlib_path)) is not None


def refusal(name):
    """What importing a module that is not `importable` says, in the self-check and when graded."""
    return (f"{name.partition('.')[0]} cannot be imported while the exercises are graded: use NumPy "
            "(NumPy and the standard library only)")


class _NoForeignImports:
    """Meta path finder that refuses every module that is not `importable`, before any other finder.

    Only a speed bump where the grader runs without a sandbox (a student can remove it); in the
    sandbox these libraries are not there at all. ModuleNotFoundError, as the sandbox would raise:
    code that catches it to go without an optional library behaves the same in both.
    """

    stdlib_path = ()  # set by worker_main before the student's code runs

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if not importable(name, cls.stdlib_path):
            raise ModuleNotFoundError(refusal(name), name=name)
        return None


class TooMuchOutput(BaseException):
    """Raised by print() once an exercise's calls printed more than OUTPUT_MB. A BaseException, so that
    the usual `except Exception` of a student's code does not swallow it and print on for minutes."""


def output_verdict():
    """The message of a call that printed too much (the same wherever it is graded)."""
    return f"printed more than {OUTPUT_MB} MB: remove the print() calls"


class _Printed(io.TextIOBase):
    """sys.stdout and sys.stderr of the child: counts what a call prints and keeps only its start.

    print() used to go to the child's stderr file, which the student never saw and whose size limit,
    once reached, failed every later print with "File too large", in whatever exercise it came.
    """

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self, before=0):
        """Count a new call's output; `before`: bytes the exercise's earlier calls printed."""
        self.size, self.line_ends, self.open_line, self.head, self.over = 0, 0, 0, "", None
        self.allowed = (OUTPUT_MB << 20) - before

    def writable(self):
        return True

    def write(self, text):
        if type(text) is not str:
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if self.over is not None:  # the student's code caught it and prints on: refused again
            raise TooMuchOutput(output_verdict())
        self.size += len(text.encode("utf-8", "replace"))
        if self.size > self.allowed:  # (the write that goes over is refused: not shown, not counted as lines)
            self.over = TooMuchOutput(output_verdict())
            raise self.over
        self.line_ends += text.count("\n")
        if text:
            self.open_line = 0 if text.endswith("\n") else 1  # a last line without its newline counts too
        if len(self.head) <= SHOWN_CHARS:
            self.head += text[:SHOWN_CHARS + 1 - len(self.head)]
        return len(text)

    def flush(self):
        pass

    def shown(self):
        """{"lines": the first lines printed (at most SHOWN_LINES), "bytes": all printed, "count": lines}."""
        lines = self.head[:SHOWN_CHARS].split("\n")
        if self.head.endswith("\n") or not self.head:
            lines = lines[:-1]
        return {"lines": lines[:SHOWN_LINES], "bytes": self.size, "count": self.line_ends + self.open_line}


_PRINTED = _Printed()


def _arrays_in(args, kwargs):
    """(path, array) for every array in the arguments, inside tuples and lists too (caches)."""
    found = []

    def walk(value, path):
        if isinstance(value, np.ndarray):
            found.append((path, value))
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                walk(item, path + [i])

    for i, arg in enumerate(args):
        walk(arg, [i])
    for key, arg in kwargs.items():
        walk(arg, [key])
    return found


# The files a student writes in (a submission is its layers.py, costs.py and optim.py; gradcheck's
# EXERCISE_FILES). A line there is the one to name, rather than the package's own code it called (a
# runaway recursion into arguments.check_floats named that, not the student's recursive call).
_STUDENT_FILES = ("layers.py", "costs.py", "optim.py")


def _where(error, root):
    """("scratchnst/layers.py:248 in conv2d_forward", "conv2d_forward"): the innermost student frame."""
    if isinstance(error, SyntaxError) and error.filename:
        return f"{os.path.relpath(error.filename, root)}:{error.lineno}", ""
    package = os.path.join(os.path.realpath(root), "scratchnst") + os.sep
    frames = traceback.extract_tb(error.__traceback__)
    mine = [f for f in frames if os.path.realpath(f.filename).startswith(package)]
    written = [f for f in mine if os.path.basename(f.filename) in _STUDENT_FILES]
    if not mine:  # a module missing from the copy: importlib's frames would say nothing to a student
        return "", ""
    frame = (written or mine)[-1]
    return f"{os.path.relpath(frame.filename, root)}:{frame.lineno} in {frame.name}", frame.name


def _text(value, limit=240):
    """str(value) on one line, or a fixed phrase when even that fails (a hostile __str__)."""
    try:
        text = str(value)
        if type(text) is not str:
            raise TypeError
    except BaseException:  # noqa: BLE001 - a student's __str__ may raise anything
        return "(the message could not be read)"
    return " ".join(text.split())[:limit]


def _raised(error, root, importing=False):
    try:
        where, function = _where(error, root)
    except BaseException:  # noqa: BLE001
        where, function = "", ""
    message = f"called sys.exit({_text(error.code, 60)})" if isinstance(error, SystemExit) else _text(error)
    if isinstance(error, OSError) and error.errno == errno.EFBIG:  # the file-size limit, not a bug to hunt
        message = f"wrote more than {OUTPUT_MB} MB to a file or to the terminal (File too large): write less"
    return {"status": "not done" if isinstance(error, NotImplementedError) and not importing else "error",
            "type": _text(type(error).__name__, 60), "message": message, "where": where, "function": function}


def _import_all(root, modules):
    """Import scratchnst and the named modules; {module: the error dict} for those that failed."""
    errors = {}
    try:  # the package, always (also when modules is empty: the package's own import is timed apart)
        package = importlib.import_module("scratchnst")
        expected = os.path.realpath(os.path.join(root, "scratchnst"))
        if os.path.dirname(os.path.realpath(package.__file__)) != expected:
            raise ImportError(f"scratchnst was imported from {package.__file__}, not from the submission")
    except (Exception, SystemExit, TooMuchOutput) as error:  # (a module that prints too much at import)
        return {m: _raised(error, root, importing=True) for m in modules}
    for module in modules:
        try:
            importlib.import_module(f"scratchnst.{module}")
        except (Exception, SystemExit, TooMuchOutput) as error:
            errors[module] = _raised(error, root, importing=True)
    return errors


def _serve(root, module, function, args, kwargs, printed=0):
    """Run one call of the student's code: (head, body) of the answer frame.

    printed: bytes the exercise's earlier calls printed (what this call may print is what is left).
    """
    _PRINTED.reset(printed)  # what this call prints, from its import on, is counted and shown on its own
    try:
        func = getattr(importlib.import_module(f"scratchnst.{module}"), function)
    except (Exception, SystemExit, TooMuchOutput) as error:
        return dict(_raised(error, root, importing=True), printed=_PRINTED.shown()), None
    before = [(path, array, array.copy()) for path, array in _arrays_in(args, kwargs)]
    try:
        value = func(*args, **kwargs)
    except (Exception, SystemExit, TooMuchOutput) as error:  # KeyboardInterrupt ends the worker, as it should
        answer, value = _raised(error, root), None
    else:
        mutated = [path for path, array, copy in before
                   if array.shape != copy.shape or array.tobytes() != copy.tobytes()]
        answer = {"status": "ok", "mutated": mutated}
    if _PRINTED.over is not None:  # it printed too much, whether or not its own code caught the exception
        answer, value = _raised(_PRINTED.over, root), None
    answer["printed"] = _PRINTED.shown()
    return answer, value


def _drop_privileges():
    """In the sandbox as root: become the child's own user (nobody if none is given), so that limits on
    processes hold and no capability is left."""
    if os.getuid() == 0 and os.environ.get("SCRATCHNST_SANDBOX") == "1":
        user = int(os.environ.get("SCRATCHNST_USER", "65534"))
        os.setgroups([])
        os.setgid(user)
        os.setuid(user)


def worker_main(root, lib):
    """Serve requests from stdin (frames), one answer frame each on stdout."""
    # `python -I -S` starts with the standard library's folders only: what is on the path besides NumPy's
    _NoForeignImports.stdlib_path = tuple(p for p in sys.path if p != lib)
    sys.path[:0] = [root] if lib in sys.path else [root, lib]
    sys.meta_path.insert(0, _NoForeignImports)
    # The protocol gets private copies of stdin and stdout; what the student writes to file descriptor 1
    # goes to stderr (a file of bounded size) and input() reads nothing, so neither can corrupt the
    # requests or the answers by accident.
    requests = os.dup(0)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), 0)
    # print() is counted and its start kept, per call (_Printed): shown by the self-check, bounded everywhere
    sys.stdout = sys.stderr = _PRINTED
    _drop_privileges()

    def send(head, body=None):
        try:
            data = encode_frame(head, body)
        except (Exception, RecursionError) as error:  # e.g. a huge int, a value json refuses
            data = encode_frame({"status": "error", "type": type(error).__name__, "where": "", "function": "",
                                 "message": f"the result cannot be sent to the grader: {_text(error, 200)}",
                                 "id": head.get("id")})  # the call's: without it the grader discards the answer
        answers.write(data)
        answers.flush()

    send({"status": "ready"})
    forever = float("inf")
    while True:
        try:
            head, body = read_frame(requests, forever, Limits(array_bytes=1 << 30, string=1 << 20))
        except EOFError:
            return
        if head.get("kind") == "import":
            errors = _import_all(root, head["modules"])
            send({"status": "imported", "errors": errors})
        else:
            args, kwargs = body
            printed = head.get("printed") if type(head.get("printed")) is int else 0
            answer, value = _serve(root, head["module"], head["function"], args, kwargs, printed)
            answer["id"] = head.get("id")
            send(answer, value)


if __name__ == "__main__":  # the grader starts this file as its worker process: see sandbox.py
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("this file is started by `scratchnst exercises check/grade`; it is not a command of its own")
