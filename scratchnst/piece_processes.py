"""Pieces of a split run in helper processes instead of threads: no GIL between them.

`parallel.split` runs the pieces of a layer's work at once on the cores. As threads of one process
the pieces wait for each other's GIL at each NumPy call they make, and a piece of a fire module or a
pooling makes tens of them: on a 2-core Xeon VM a SqueezeNet step at 256x256 took 36.7 ms with its
layers split across two threads and 39.3 ms on one core, while two processes each making a whole
step at once took 39.7 ms each, as fast as one alone. So inside `parallel.hold()` (a run) a split
whose piece is a module-level function of arrays and plain values (`parallel.split(..., args=)`)
hands its other pieces to helper processes, one per other core:

    caller (parallel.split)                      helper k (`main`, a process of its own)
    the job: the function's name, the piece's
    range, each array as (segment, offset,  ->   rebuilds the arrays as views of the same memory,
    shape, strides, dtype), NumPy's errstate     runs fn(start, stop, *args) on one BLAS thread
    its own piece meanwhile
    waits for the job's number              <-   writes its status, then the job's number

The arrays live in memory both map (`shared_arena`); an array the caller made elsewhere (the user's
image) is copied there for the job, if the piece only reads it. The job and the answer go through a
small shared control block: the caller writes the job, then its number; the helper spins on that
number while the run lasts, so a handoff costs about half a microsecond instead of the 75-130 us a
pipe's wake-up took on that VM (a thread's, in a ThreadPoolExecutor, 85 us). It sleeps on its
socket instead outside a run, 0.1 s after its last job, while the caller's pool threads have work
on its core (`parallel.ahead`, the splits still made of threads: a spinning helper took half of
their core), and under a CPU quota or SCRATCHNST_SPIN=0 (`awake_cores.busy_waiting_allowed`).
Every job also sends a byte to the socket, so a helper that went to sleep just as a job came is
woken by it. (It does not give its core away at each turn: sched_yield handed the core to the
idle-priority spinner of `awake_cores` for a scheduler tick, 4 ms; a run with helpers has no
spinners.) The order of the stores (the job before its number, the status before the done
number) is what x86's memory model keeps, so helpers are used on x86-64 Linux only; elsewhere the
pieces stay threads.

A piece is computed by the same code on the same kind of thread (one BLAS thread, the same
kernel: the helper inherits the environment), so the results are the same bits as with threads
(the same code as it is on disk: a monkeypatch in the caller does not reach the helper). If a
helper fails a piece (an exception, a warning, a signal, it is gone), the caller runs that piece
itself, raising the piece's own exception if there is one, so a piece must give the same result
run twice over what it may have half written (it writes the cells it owns before it adds to
them); a function whose pieces keep failing in a helper and not in the caller stays in threads,
and a helper that is gone is not replaced: the process's splits go back to threads. Helpers run in sessions of their own (a Ctrl-C reaches only
the caller) and end when their socket closes: the caller closed it, or died.
"""

import marshal
import mmap
import os
import platform
import socket
import subprocess
import sys
import time
import warnings

import numpy as np

from scratchnst import shared_arena

ENVIRONMENT_VARIABLE = "SCRATCHNST_PROCESSES"   # 0: the pieces of splits stay threads

# The control block: int64 words, then the job's bytes, then the answer's.
_JOB, _DONE, _HELD, _LENGTH, _STATUS, _ANSWER_LENGTH = range(6)
_WORDS = 8
_JOB_START = _WORDS * 8
_JOB_BYTES = 1 << 20
_ANSWER_START = _JOB_START + _JOB_BYTES
_ANSWER_BYTES = 1 << 16
CONTROL_BYTES = _ANSWER_START + _ANSWER_BYTES
SPIN_SECONDS = 0.1          # a helper spins this long after its last job, while the run lasts
_START_SECONDS = 30.0       # a helper has this long to say it is ready

# The modules whose functions are pieces of splits with `args` (a test keeps the list whole). A helper
# imports them before it says it is ready: imported at its first job instead, they held up the first
# split of a run by about 25 ms, the caller waiting.
PIECE_MODULES = ("scratchnst.fast_conv", "scratchnst.fast_pool", "scratchnst.fire_rows", "scratchnst.lbfgs_memory",
                 "scratchnst.tap_planes")

# The folder holding this scratchnst: a helper process puts it first on its path (`helper_command`).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def helper_command(entry):
    """The code a helper process runs (`python -c`), `entry` last: a Python source line or two.

    The current directory leaves sys.path, and this scratchnst's folder (PACKAGE_PARENT, given as
    $SCRATCHNST_HELPER_PATH) goes first if the scratchnst found otherwise (installed, say) is another
    one: the helper runs the caller's code. A string, not an import of the entry's module, so that
    its module and the caller's make no import cycle. Training's helpers start so too.
    """
    return ("import os, sys, importlib.util\n"
            "if sys.path and sys.path[0] == '':\n"
            "    del sys.path[0]\n"
            "want = os.environ['SCRATCHNST_HELPER_PATH']\n"
            "found = importlib.util.find_spec('scratchnst')\n"
            "if found is None or os.path.realpath(os.path.dirname(os.path.dirname(found.origin))) != "
            "os.path.realpath(want):\n"
            "    sys.path.insert(0, want)\n" + entry)


HELPER_COMMAND = helper_command("from scratchnst.piece_processes import main\n"
                                "main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])\n")


def supported():
    """Whether pieces may run in helper processes here: x86-64 Linux, shared memory, not turned off."""
    if os.environ.get(ENVIRONMENT_VARIABLE, "").strip() == "0":
        return False
    if sys.platform != "linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    return hasattr(socket, "send_fds") and shared_arena.available()


# ------------------------------------------------------------------------------- encoding a job
class NotShareable(Exception):
    """An argument a helper cannot be given: the split runs its pieces as threads."""


def encode_args(args, writes, arena, keep):
    """The arguments of a piece as a marshal-able tuple; arrays by where they lie in `arena`.

    An array outside the arena that the piece only reads is copied into it (the copy appended to
    `keep`, to live until the job is done); one it writes (its index in `writes`) cannot be, nor can
    anything but arrays, numbers, strings, None and tuples or lists of them: NotShareable.
    """
    encoded = []
    for k, value in enumerate(args):
        encoded.append(_encode(value, k in writes, arena, keep))
    return tuple(encoded)


def _encode(value, written, arena, keep):
    if isinstance(value, np.ndarray):
        if type(value) is not np.ndarray:   # a matrix, a masked array: rebuilt plain, it would compute otherwise
            raise NotShareable(f"an array of class {type(value).__name__}")
        if value.dtype.hasobject or value.dtype.fields is not None:
            raise NotShareable("an array of objects or records")
        place = arena.where(value)
        if place is None:
            if written:
                raise NotShareable("an output outside shared memory")
            try:
                copy = _same_layout(arena, value)
            except OSError:   # no memory or file left for a segment
                raise NotShareable("no shared memory left for a copy") from None
            copy[...] = value
            keep.append(copy)
            value, place = copy, arena.where(copy)
            if place is None:   # an empty array: nothing to share, rebuilt as one
                return ("E", tuple(value.shape), value.dtype.str)
        return ("A", shared_arena.describe(value, place))
    if isinstance(value, np.generic):
        return ("S", value.dtype.str, value.tobytes())
    if isinstance(value, np.dtype):
        return ("D", value.str)
    if value is None or type(value) in (bool, int, float, str):   # not subclasses: marshal takes these only
        return ("V", value)
    if type(value) in (tuple, list):
        return ("T" if isinstance(value, tuple) else "L", tuple(_encode(v, written, arena, keep) for v in value))
    raise NotShareable(type(value).__name__)


def _same_layout(arena, a):
    """An array of the arena shaped as `a`, its axes in memory in the order of a's strides.

    A transposed view (a flipped kernel) is copied as the same transpose of a contiguous array, so that
    the piece's products read it as they would read the original, with the same kernels and bits.
    """
    order = sorted(range(a.ndim), key=lambda k: -abs(a.strides[k]))
    stored = arena.empty(tuple(a.shape[k] for k in order), a.dtype)
    return stored.transpose(np.argsort(order))


def decode_args(encoded, mapped):
    """The arguments `encode_args` described, arrays as views of the segments `mapped` {index: mmap}."""
    return tuple(_decode(item, mapped) for item in encoded)


def _decode(item, mapped):
    kind, value = item[0], item[1]
    if kind == "A":
        return shared_arena.view(mapped, value)
    if kind == "E":
        return np.empty(value, np.dtype(item[2]))
    if kind == "S":
        return np.frombuffer(item[2], np.dtype(value))[0]
    if kind == "D":
        return np.dtype(value)
    if kind == "V":
        return value
    items = [_decode(v, mapped) for v in value]
    return tuple(items) if kind == "T" else items


def function_name(fn):
    """(module, qualified name) of a module-level function, or NotShareable."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if not module or module == "__main__" or "<" in name or sys.modules.get(module) is None:
        raise NotShareable("not a module-level function a helper can import")
    found = sys.modules[module]
    for part in name.split("."):
        found = getattr(found, part, None)
    if found is not fn:
        raise NotShareable("not a module-level function")
    return module, name


# ------------------------------------------------------------------------------------- the caller
class Helper:
    """One helper process, started at once, ready a moment later (`ready`); see the module docstring.

    OSError if it cannot be started.
    """

    def __init__(self, core):
        self.broken = False
        self._generation = None
        fd = os.memfd_create("scratchnst-control")
        try:
            os.ftruncate(fd, CONTROL_BYTES)
            self._memory = mmap.mmap(fd, CONTROL_BYTES)
            self._words = np.frombuffer(self._memory, np.int64, _WORDS)
            self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "VECLIB_MAXIMUM_THREADS": "1", "SCRATCHNST_WORKERS": "1",
                       "SCRATCHNST_HELPER_PATH": PACKAGE_PARENT}
                self._proc = subprocess.Popen(
                    [sys.executable, "-c", HELPER_COMMAND, str(fd), str(theirs.fileno()),
                     "" if core is None else str(core)],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                    env=env, start_new_session=True, pass_fds=(fd, theirs.fileno()))
            finally:
                theirs.close()
        finally:
            os.close(fd)
        self._socket.setblocking(False)
        self._started, self._ready = time.monotonic(), False

    def ready(self):
        """Whether the helper has started and said so; never waits (a Python start and the imports of
        PIECE_MODULES take it 0.14 s on a 2-core Xeon).

        A helper silent for _START_SECONDS, or gone, is broken.
        """
        if self._ready or self.broken:
            return self._ready
        try:
            said = self._socket.recv(16)
        except (BlockingIOError, InterruptedError):
            if time.monotonic() - self._started > _START_SECONDS or self._proc.poll() is not None:
                self.broken = True
            return False
        except OSError:
            said = b""
        self._ready = said == b"r"
        self.broken = not self._ready
        return self._ready

    def starting(self, seconds):
        """Whether the helper is not ready yet (`ready`), nor broken, and was started less than `seconds` ago."""
        return not self.ready() and not self.broken and time.monotonic() - self._started < seconds

    def hold(self, on):
        """Let the helper spin between jobs (a run is on) or not."""
        self._words[_HELD] = 1 if on else 0

    def start(self, arena, payload):
        """Hand the helper a job (marshalled bytes); it must be waited for (`wait`) before the next, and
        is waited for even if this is interrupted: the job is posted by one store, which `wait` reads."""
        if arena.generation != self._generation:
            self.sync(arena)
        if len(payload) > _JOB_BYTES:
            raise NotShareable("a job too large for the control block")
        self._memory[_JOB_START:_JOB_START + len(payload)] = payload
        self._words[_LENGTH] = len(payload)
        self._words[_JOB] = self._words[_JOB] + 1   # after the job's bytes: x86 keeps stores in order
        self.wake()

    def wake(self):
        """Wake the helper if it sleeps (a byte on its socket)."""
        try:
            self._socket.send(b"w")
        except (BlockingIOError, InterruptedError):   # its queue is full of wake-ups already
            pass
        except OSError:
            self.broken = True

    def wait(self):
        """(ok, message) of the last job posted (at once if it is done, or none was posted): ok False if
        it failed or the helper is gone (broken)."""
        spins = 0
        while self._words[_DONE] != self._words[_JOB]:
            spins += 1
            if spins % 4096 == 0:
                if self._proc.poll() is not None:
                    self.broken = True
                    return False, "the helper process ended"
                if spins % (1 << 20) == 0:   # its wake-up may have been lost (a Ctrl-C between job and wake)
                    self.wake()
        if self._words[_STATUS] == 0:
            return True, ""
        n = int(self._words[_ANSWER_LENGTH])
        return False, bytes(self._memory[_ANSWER_START:_ANSWER_START + n]).decode("utf8", "replace")

    def sync(self, arena):
        """Send the helper the arena's segments (it maps the new ones and lets go of the dropped ones)."""
        generation, listed = arena.segments()
        message = marshal.dumps([(i, size) for i, _, size in listed])   # more than the one byte of a wake-up
        self._socket.setblocking(True)
        self._socket.settimeout(10)
        try:
            socket.send_fds(self._socket, [message], [fd for _, fd, _ in listed])
        except OSError:
            self.broken = True
            raise NotShareable("the helper process does not listen")
        finally:
            self._socket.setblocking(False)
        self._generation = generation

    def kill(self):
        """Kill the helper at once (it may be writing into memory about to be reused)."""
        try:
            self._proc.kill()
        except OSError:
            pass

    def close(self, kill=False):
        """End the helper: its socket closes and it exits (killed at once with `kill`, or if it has
        not exited within a second)."""
        proc = getattr(self, "_proc", None)
        try:
            if kill and proc is not None:
                self.kill()
            self._socket.close()
        finally:
            if proc is not None:
                try:
                    proc.wait(timeout=1)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


# ------------------------------------------------------------------------------------ the helper
def main(control_fd, socket_fd, core):
    """A helper's life: map the control block, say ready, then run jobs until the socket closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if core:
        try:
            os.sched_setaffinity(0, {int(core)})
        except OSError:
            pass
    memory = mmap.mmap(control_fd, CONTROL_BYTES)
    words = np.frombuffer(memory, np.int64, _WORDS)
    channel = socket.socket(fileno=socket_fd)
    mapped, functions = {}, {}
    for module in PIECE_MODULES:
        __import__(module)
    channel.send(b"r")
    seen = 0   # its environment says one worker: the layers inside a piece are not split again
    last = time.monotonic()
    while True:
        while words[_JOB] == seen:
            if words[_HELD] and time.monotonic() - last < SPIN_SECONDS:
                continue
            if not _listen(channel, mapped, block=True):
                return
            last = time.monotonic()   # woken (a run starts, or a job comes): spin from now
        if not _listen(channel, mapped, block=False):
            return
        seen = int(words[_JOB])
        status, answer = 0, b""
        try:
            job = memory[_JOB_START:_JOB_START + int(words[_LENGTH])]
            module, name, start, stop, encoded, errstate = marshal.loads(job)
            fn = functions.get((module, name))
            if fn is None:
                __import__(module)
                fn = sys.modules[module]
                for part in name.split("."):
                    fn = getattr(fn, part)
                functions[(module, name)] = fn
            args = decode_args(encoded, mapped)
            with np.errstate(**errstate), warnings.catch_warnings():
                # a warning the caller would see: the caller runs the piece again itself, and sees it
                warnings.simplefilter("error")
                fn(start, stop, *args)
        except BaseException as error:   # the caller runs the piece again itself, and sees what it raises
            status, answer = 1, f"{type(error).__name__}: {error}".encode("utf8", "replace")[:_ANSWER_BYTES]
        args = None   # no view of a segment outlives its job: a dropped segment can be let go
        memory[_ANSWER_START:_ANSWER_START + len(answer)] = answer
        words[_ANSWER_LENGTH] = len(answer)
        words[_STATUS] = status
        words[_DONE] = seen   # after the status: x86 keeps stores in order
        last = time.monotonic()


def _listen(channel, mapped, block):
    """Read what waits on the socket (wake-ups, segment lists); False when it has closed."""
    channel.setblocking(block)
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(channel, 1 << 16, 253)   # Linux's SCM_MAX_FD
        except (BlockingIOError, InterruptedError):
            return True
        if not data:
            return False
        if len(data) > 1:
            _map_segments(data, fds, mapped)
        elif fds:
            for fd in fds:
                os.close(fd)
        if block:
            channel.setblocking(False)
            block = False


def _map_segments(data, fds, mapped):
    listed = marshal.loads(data)
    live = set()
    for (index, size), fd in zip(listed, fds):
        live.add(index)
        if index not in mapped:
            mapped[index] = mmap.mmap(fd, size)
        os.close(fd)
    for index in list(mapped):
        if index not in live:
            try:
                mapped.pop(index).close()
            except BufferError:
                pass
