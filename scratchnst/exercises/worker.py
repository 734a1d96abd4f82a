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

import importlib
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
_BLOCKED_IMPORTS = ("torch", "scipy", "tensorflow", "jax")


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
        count = 1
        for d in spec["shape"]:
            count *= d
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
class _NoForeignImports:
    """Meta path finder that refuses the libraries the exercises must not lean on.

    Only a speed bump where the grader runs without a sandbox (a student can remove it); in the
    sandbox these libraries are not there at all.
    """

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.partition(".")[0] in _BLOCKED_IMPORTS:
            raise ImportError(f"{name} cannot be imported while the exercises are graded: use NumPy")
        return None


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
    except (Exception, SystemExit) as error:
        return {m: _raised(error, root, importing=True) for m in modules}
    for module in modules:
        try:
            importlib.import_module(f"scratchnst.{module}")
        except (Exception, SystemExit) as error:
            errors[module] = _raised(error, root, importing=True)
    return errors


def _serve(root, module, function, args, kwargs):
    """Run one call of the student's code: (head, body) of the answer frame."""
    try:
        func = getattr(importlib.import_module(f"scratchnst.{module}"), function)
    except (Exception, SystemExit) as error:
        return _raised(error, root, importing=True), None
    before = [(path, array, array.copy()) for path, array in _arrays_in(args, kwargs)]
    try:
        value = func(*args, **kwargs)
    except (Exception, SystemExit) as error:  # KeyboardInterrupt ends the worker, as it should
        return _raised(error, root), None
    mutated = [path for path, array, copy in before
               if array.shape != copy.shape or array.tobytes() != copy.tobytes()]
    return {"status": "ok", "mutated": mutated}, value


def _drop_privileges():
    """In the sandbox as root: become nobody, so that limits on processes hold and no capability is left."""
    if os.getuid() == 0 and os.environ.get("SCRATCHNST_SANDBOX") == "1":
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)


def worker_main(root, lib):
    """Serve requests from stdin (frames), one answer frame each on stdout."""
    sys.path[:0] = [root] if lib in sys.path else [root, lib]
    sys.meta_path.insert(0, _NoForeignImports)
    # The protocol gets private copies of stdin and stdout; the student's print() goes to stderr
    # and input() reads nothing, so neither can corrupt the requests or the answers by accident.
    requests = os.dup(0)
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    with open(os.devnull, "rb") as nothing:
        os.dup2(nothing.fileno(), 0)
    _drop_privileges()

    def send(head, body=None):
        try:
            data = encode_frame(head, body)
        except (Exception, RecursionError) as error:  # e.g. a huge int, a value json refuses
            data = encode_frame({"status": "error", "type": type(error).__name__, "where": "", "function": "",
                                 "message": f"the result cannot be sent to the grader: {_text(error, 200)}"})
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
            answer, value = _serve(root, head["module"], head["function"], args, kwargs)
            answer["id"] = head.get("id")
            send(answer, value)


if __name__ == "__main__":  # the grader starts this file as its worker process: see sandbox.py
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
    else:
        sys.exit("this file is started by `scratchnst exercises check/grade`; it is not a command of its own")
